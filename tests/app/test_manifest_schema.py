"""Hostile project manifests: every one is refused with a ProjectError naming the project file
and the field, before anything is unpacked (through Project.open on real zip files); random
documents, mutations of a good manifest and random bytes never raise anything else; and the
reader, its schemas and its wording (metastudio.data.jsondoc) hold what they declare."""

from __future__ import annotations

import copy
import json
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from metastudio.app.project import Project
from metastudio.app.project.manifest import (
    FORMAT,
    SCHEMA,
    ParsedManifest,
    parse_manifest,
    parse_manifest_text,
    read_manifest_text,
    to_manifest,
)
from metastudio.app.project.recovery import SIDECAR_SCHEMA
from metastudio.data import jsondoc
from metastudio.engine import model_schema
from metastudio.errors import MetaStudioError, ProjectError

FILE = "0123456789abcdef.png"
GOOD: dict = {
    "format": FORMAT, "format_version": 1, "app_version": "0.1.0", "saved_at": "2025-01-31T12:00:00+00:00",
    "classes": [
        {"id": "c1", "name": "Cats", "colour": "#0072b2", "images": [{"id": "i1", "file": FILE, "source": "/a/cat.png"}]},
        {"id": "c2", "name": "Dogs", "colour": "#E69F00", "images": []},
    ],
    "queries": [{"id": "q1", "file": "fedcba9876543210.jpg", "source": "camera"}],
    "model": {"kind": "project", "name": "mine.safetensors"},
    "hyperparameters": {"adapt_steps": 5}, "settings": {"training": {"steps": [1, 2]}},
    "models": ["mine.safetensors"],
    "sizes": {f"images/{FILE}": 1234, "models/mine.safetensors": 0},
}


def good(**changes) -> dict:
    return {**copy.deepcopy(GOOD), **changes}


def changed(change) -> dict:
    document = copy.deepcopy(GOOD)
    change(document)
    return document


def _first_class(**fields):
    return lambda d: d["classes"][0].update(fields)


def _first_image(**fields):
    return lambda d: d["classes"][0]["images"][0].update(fields)


#: name -> (the manifest: a document or its raw text, words the error must hold)
HOSTILE = {
    "number-5000-digits": ('{"format": "metastudio-project", "format_version": 1, "x": ' + "7" * 5000 + "}",
                           "field 'x' holds a number of 5000 digits (777777777777...), more than the 40 allowed"),
    "version-5000-digits": ('{"format": "metastudio-project", "format_version": 1' + "0" * 5000 + "}",
                            "field 'format_version' holds a number of 5001 digits"),
    "float-too-large": ('{"format": "metastudio-project", "format_version": 1, "settings": {"zoom": 1e999}}',
                        "field 'settings.zoom' holds a number too large to use (1e999)"),
    "nan": ('{"format": "metastudio-project", "format_version": 1, "settings": {"zoom": NaN}}',
            "field 'settings.zoom' holds NaN, which is not a usable number"),
    "deep-100000": ("[" * 100_000 + "]" * 100_000, "the manifest nests more than 100 levels deep"),
    "deep-object": ('{"a":' * 100_000 + "1" + "}" * 100_000, "the manifest nests more than 100 levels deep"),
    "deep-settings": ('{"format": "metastudio-project", "format_version": 1, "settings": '
                      + "[" * 120 + "]" * 120 + "}", "the manifest nests more than 100 levels deep"),
    "a-list": ("[1, 2, 3]", "the manifest must be an object, not a list"),
    "a-string": ('"hello"', "the manifest must be an object, not 'hello'"),
    "a-number": ("42", "the manifest must be an object, not 42"),
    "null": ("null", "the manifest must be an object, not null"),
    "not-json": ("{nope", "the manifest is not valid JSON: expecting property name enclosed in double quotes "
                          "(line 1, column 2)"),
    "not-utf8": (b'{"format": "\xff\xfe"}', "the manifest is not UTF-8 text"),
    "format-missing": (changed(lambda d: d.pop("format")), "it is not a MetaStudio project (its manifest names no format)"),
    "format-other": (good(format="something-else"), "it is not a MetaStudio project (its manifest's format is "
                                                    "'something-else')"),
    "format-newer": (good(format_version=2), "made by a newer MetaStudio (project format version 2; MetaStudio"),
    "version-text": (good(format_version="1"), "field 'format_version' must be a whole number, not '1'"),
    "version-float": (good(format_version=1.0), "field 'format_version' must be a whole number, not 1.0"),
    "version-zero": (good(format_version=0), "field 'format_version' must be at least 1, not 0"),
    "version-missing": (changed(lambda d: d.pop("format_version")), "field 'format_version' is missing"),
    "app-version-list": (good(app_version=[1]), "field 'app_version' must be a string, not a list"),
    "saved-at-long": (good(saved_at="x" * 101), "field 'saved_at' must be at most 100 characters long (it has 101)"),
    "classes-object": (good(classes={"a": 1}), "field 'classes' must be a list, not an object"),
    "class-a-string": (good(classes=["Cats"]), "field 'classes[0]' must be an object, not 'Cats'"),
    "class-id-empty": (changed(_first_class(id="")), "field 'classes[0].id' must be a non-empty string, not ''"),
    "class-id-number": (changed(_first_class(id=7)), "field 'classes[0].id' must be a string, not 7"),
    "class-name-number": (changed(_first_class(name=5)), "field 'classes[0].name' must be a string, not 5"),
    "class-name-long": (changed(_first_class(name="n" * 1001)), "field 'classes[0].name' must be at most 1000 "
                                                                "characters long (it has 1001)"),
    "class-name-missing": (changed(lambda d: d["classes"][0].pop("name")), "field 'classes[0].name' is missing"),
    "colour-red": (changed(_first_class(colour="red")), "field 'classes[0].colour' must be a '#rrggbb' colour, "
                                                        "not 'red'"),
    "colour-newline": (changed(_first_class(colour="#0072b2\n")), "field 'classes[0].colour' must be a '#rrggbb' colour"),
    "colour-null": (changed(_first_class(colour=None)), "field 'classes[0].colour' must be a string, not null"),
    "images-object": (changed(_first_class(images={})), "field 'classes[0].images' must be a list, not an object"),
    "image-file-parent": (changed(_first_image(file="../evil.png")), "field 'classes[0].images[0].file' must be an "
                                                                    "image file name like '0123456789abcdef.png', "
                                                                    "not '../evil.png'"),
    "image-file-deeper": (changed(_first_image(file="../../" + FILE)), "field 'classes[0].images[0].file' must be"),
    "image-file-absolute": (changed(_first_image(file="/etc/passwd")), "not '/etc/passwd'"),
    "image-file-newline": (changed(_first_image(file=FILE + "\n")), "field 'classes[0].images[0].file' must be"),
    "image-file-missing": (changed(lambda d: d["classes"][0]["images"][0].pop("file")),
                           "field 'classes[0].images[0].file' is missing"),
    "image-source-number": (changed(_first_image(source=3)), "field 'classes[0].images[0].source' must be a string"),
    "query-file-list": (good(queries=[{"id": "q", "file": [FILE]}]), "field 'queries[0].file' must be a string, "
                                                                     "not a list"),
    "queries-string": (good(queries="all"), "field 'queries' must be a list, not 'all'"),
    "ids-twice": (changed(_first_class(id="c2")), "field 'classes[1].id' holds 'c2', an id used twice (by "
                                                  "classes[0] too)"),
    "image-id-of-a-class": (changed(_first_image(id="c1")), "field 'classes[0].images[0].id' holds 'c1', an id used "
                                                            "twice (by classes[0] too)"),
    "query-id-twice": (good(queries=[{"id": "q", "file": FILE}, {"id": "q", "file": FILE}]),
                       "field 'queries[1].id' holds 'q', an id used twice (by queries[0] too)"),
    "model-a-list": (good(model=["x"]), "field 'model' must be an object, not a list"),
    "model-kind-number": (good(model={"kind": 1}), "field 'model.kind' must be a string, not 1"),
    "hyperparameters-list": (good(hyperparameters=[1]), "field 'hyperparameters' must be an object, not a list"),
    "hyperparameter-key-long": (good(hyperparameters={"k" * 101: 1}), "field 'hyperparameters' has a key 'kkkk"),
    "settings-list": (good(settings=[1]), "field 'settings' must be an object, not a list"),
    "models-string": (good(models="mine.safetensors"), "field 'models' must be a list, not 'mine.safetensors'"),
    "model-name-slash": (good(models=["sub/evil.safetensors"]), "field 'models[0]' must be a model file name like "
                                                                "'my model.safetensors'"),
    "model-name-parent": (good(models=["../evil.safetensors"]), "not '../evil.safetensors'"),
    "model-name-backslash": (good(models=["..\\evil.safetensors"]), "field 'models[0]' must be a model file name"),
    "model-name-reserved": (good(models=["con.safetensors"]), "field 'models[0]' must be a model file name like "
                                                              "'my model.safetensors' (letters, digits, spaces, '.', "
                                                              "'_' and '-', not a path), not 'con.safetensors'"),
    "model-name-number": (good(models=[3]), "field 'models[0]' must be a string, not 3"),
    "sizes-list": (good(sizes=[1]), "field 'sizes' must be an object, not a list"),
    "size-negative": (good(sizes={f"images/{FILE}": -1}), f"field 'sizes[\"images/{FILE}\"]' must be at least 0, not -1"),
    "size-fraction": (good(sizes={f"images/{FILE}": 1.5}), f"field 'sizes[\"images/{FILE}\"]' must be a whole number, "
                                                          "not 1.5"),
    "size-float": (good(sizes={f"images/{FILE}": 5.0}), "must be a whole number, not 5.0"),
    "size-text": (good(sizes={"models/mine.safetensors": "12"}), "field 'sizes[\"models/mine.safetensors\"]' must be "
                                                                 "a whole number, not '12'"),
    "size-true": (good(sizes={"models/mine.safetensors": True}), "must be a whole number, not true"),
    "size-huge": (good(sizes={"models/mine.safetensors": 2**64}), "must be at most 9223372036854775807"),
    "size-key-escapes": (good(sizes={"images/../../evil.png": 1}), "field 'sizes' has a key 'images/../../evil.png', "
                                                                   "but a key must be 'images/<file>' or "
                                                                   "'models/<name>'"),
    "size-key-other": (good(sizes={"manifest.json": 1}), "field 'sizes' has a key 'manifest.json'"),
}


def write_project(path: Path, manifest) -> Path:
    """A zip file holding ``manifest`` (a document, or raw text/bytes) as its manifest.json."""
    data = manifest if isinstance(manifest, (str, bytes)) else json.dumps(manifest, allow_nan=False)
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("manifest.json", data)
    return path


@pytest.mark.parametrize("name", sorted(HOSTILE))
def test_hostile_manifests_are_refused_naming_the_file_and_the_field(name, tmp_path):
    manifest, words = HOSTILE[name]
    path = write_project(tmp_path / f"{name}.metastudio", manifest)
    workdir = tmp_path / "work"
    with pytest.raises(ProjectError) as caught:
        Project.open(path, workdir=workdir)
    assert str(caught.value).startswith(f"cannot open project '{path}': ")
    assert words in str(caught.value), str(caught.value)
    assert not workdir.exists()  # refused before anything was unpacked


def test_the_good_manifest_parses_with_its_sizes():
    parsed = parse_manifest_text(json.dumps(GOOD).encode())
    assert isinstance(parsed, ParsedManifest)
    assert [c.name for c in parsed.classes] == ["Cats", "Dogs"] and parsed.classes[1].colour == "#E69F00"
    assert [i.file for i in parsed.all_items()] == [FILE, "fedcba9876543210.jpg"]
    assert parsed.sizes == {f"images/{FILE}": 1234, "models/mine.safetensors": 0}
    assert parsed.models == ["mine.safetensors"] and parsed.hyperparameters == {"adapt_steps": 5}
    bare = parse_manifest_text('\ufeff{"format": "metastudio-project", "format_version": 1, "later": {"field": 1}}')
    assert bare.sizes == {} and bare.classes == [] and bare.model == {"kind": "shipped", "name": "photos"}
    assert parse_manifest(GOOD).sizes == parsed.sizes
    parsed.settings["training"]["steps"].append(3)
    assert GOOD["settings"]["training"]["steps"] == [1, 2]  # fresh objects, not the document's


def test_read_manifest_text_bounds_the_text_only():
    assert read_manifest_text(b'{"format": "x"}') == {"format": "x"}
    with pytest.raises(ProjectError, match="the manifest nests more than 100 levels deep"):
        read_manifest_text("[" * 101 + "]" * 101)
    with pytest.raises(ProjectError, match="the manifest is too long"):
        read_manifest_text(b" " * ((64 << 20) + 1))


def test_a_saved_manifest_with_sizes_passes_the_check_before_writing(tmp_path):
    project = Project()
    entry = project.add_class("Cats")
    from PIL import Image

    Image.new("RGB", (8, 8), "red").save(tmp_path / "red.png")
    entry.images.append(project.import_file(tmp_path / "red.png"))
    manifest = to_manifest(project)
    manifest["sizes"] = {f"images/{entry.images[0].file}": (tmp_path / "red.png").stat().st_size}
    assert parse_manifest(manifest).sizes == manifest["sizes"]
    project.save(tmp_path / "p.metastudio")
    with Project.open(tmp_path / "p.metastudio") as opened:
        assert [c.name for c in opened.classes] == ["Cats"]
    project.close()


@pytest.mark.parametrize("value, words", [
    (10**50, "the project's field 'settings.seed' holds a number of 51 digits (100000000000...), more than the 40"),
    (json.loads("[" * 150 + "]" * 150), "nests more than 100 levels deep"),
])
def test_a_project_that_would_not_open_again_is_not_saved(value, words, tmp_path):
    project = Project()
    project.settings = {"seed": value}
    with pytest.raises(ProjectError, match=words.replace("(", r"\(").replace(")", r"\)")):
        project.save(tmp_path / "p.metastudio")
    assert not (tmp_path / "p.metastudio").exists()


def test_settings_nested_thousands_deep_are_refused_not_a_recursion_error(tmp_path):
    deep: list = []
    for _ in range(100_000):
        deep = [deep]
    project = Project()
    project.settings = {"deep": deep}
    with pytest.raises(ProjectError, match="nest more than 100 levels deep"):
        project.to_manifest()
    with pytest.raises(ProjectError, match="the manifest nests more than 100 levels deep"):
        parse_manifest({"format": FORMAT, "format_version": 1, "settings": {"deep": deep}})


# ----------------------------------------------------------------------------------------------
# Properties: whatever the input, a ParsedManifest or a ProjectError


def _only_project_errors(data) -> None:
    try:
        result = parse_manifest_text(data)
    except ProjectError as error:
        assert str(error) and "Traceback" not in str(error)
        return
    assert isinstance(result, ParsedManifest)


JSONISH = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=8)
    | st.sampled_from([FILE, "#00ff00", "mine.safetensors", "../x", "images/" + FILE, 2**70, -1, ""]),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(
        st.sampled_from(sorted(GOOD) + ["id", "name", "colour", "images", "file", "source", "kind", "x"]),
        inner, max_size=5),
    max_leaves=25)


def _paths(node, path=()):
    """Every path inside a document (a key or index at a time), the document's own first."""
    yield path
    items = node.items() if isinstance(node, dict) else enumerate(node) if isinstance(node, list) else ()
    for key, value in items:
        yield from _paths(value, (*path, key))


GOOD_PATHS = [p for p in _paths(GOOD) if p]


def _replace(document, path, value):
    document = copy.deepcopy(document)
    node = document
    for key in path[:-1]:
        node = node[key]
    node[path[-1]] = value
    return document


@settings(max_examples=200, deadline=None, database=None)
@given(JSONISH, st.booleans())
def test_random_documents_give_a_manifest_or_a_project_error(document, over_good):
    if over_good and isinstance(document, dict):
        document = {**GOOD, **document}
    _only_project_errors(json.dumps(document))


HOSTILE_VALUES = (JSONISH | st.sampled_from([
    "7" * 5000, "1e999", "NaN", "-Infinity", "[" * 5000 + "]" * 5000, '{"a":' * 300 + "1" + "}" * 300, '"\\ud800"',
]).map(lambda raw: ("raw", raw)))


@settings(max_examples=200, deadline=None, database=None)
@given(st.sampled_from(GOOD_PATHS), HOSTILE_VALUES)
def test_every_field_of_a_good_manifest_replaced_gives_a_project_error_or_a_manifest(path, value):
    if isinstance(value, tuple) and value[:1] == ("raw",):  # spliced into the text: what no encoder writes
        marker = "\u2063MARK\u2063"
        text = json.dumps(_replace(GOOD, path, marker), ensure_ascii=False).replace(json.dumps(marker), value[1])
        _only_project_errors(text.encode())
    else:
        _only_project_errors(json.dumps(_replace(GOOD, path, value)))


@settings(max_examples=200, deadline=None, database=None)
@given(st.binary(max_size=200) | st.text(max_size=200).map(str.encode)
       | st.binary(max_size=40).map(lambda b: json.dumps(GOOD).encode()[:60] + b))
def test_random_bytes_give_a_project_error_or_a_manifest(data):
    _only_project_errors(data)


# ----------------------------------------------------------------------------------------------
# The reader, its schemas and its words


@pytest.mark.parametrize("schema", [SCHEMA, SIDECAR_SCHEMA, model_schema.SCHEMA], ids=["manifest", "sidecar", "model"])
def test_the_declared_schemas_are_valid_json_schemas(schema):
    import jsonschema

    jsonschema.Draft202012Validator.check_schema(schema)
    assert schema["$schema"] == "https://json-schema.org/draft/2020-12/schema"


def test_the_app_does_not_import_jsonschema_until_a_document_is_read():
    code = ("import sys, json\n"
            "import metastudio.app.project, metastudio.data.jsondoc\n"
            "assert 'jsonschema' not in sys.modules, 'imported at start-up'\n"
            "from metastudio.app.project.manifest import parse_manifest_text\n"
            "parse_manifest_text(json.dumps({'format': 'metastudio-project', 'format_version': 1}))\n"
            "assert 'jsonschema' in sys.modules\n")
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stderr


class _Error(MetaStudioError):
    pass


def test_words_name_the_file_the_document_and_the_field():
    schema = {"type": "object", "properties": {"n": {"type": "integer", "maximum": 3}}}
    words = jsondoc.Words(_Error, where="thing 'f.json'", document="its index")
    with pytest.raises(_Error, match=r"^thing 'f.json': its index's field 'n' must be at most 3, not 4$"):
        jsondoc.read_document('{"n": 4}', schema, words)
    with pytest.raises(_Error, match=r"^thing 'f.json': its index must be an object, not a list$"):
        jsondoc.read_document("[]", schema, words)
    with pytest.raises(_Error, match=r"^no JSON here$"):
        jsondoc.read_document("{", schema, words, not_json="no JSON here")
    assert jsondoc.read_document(b'{"n": 3}', schema, words) == {"n": 3}
    assert jsondoc.field_name(["a", 0, "b c", "d"]) == 'a[0]["b c"].d'


def test_the_check_runs_before_the_schema():
    seen = []
    with pytest.raises(_Error, match="other kind"):
        jsondoc.read_document('{"kind": "other"}', {"required": ["x"]}, jsondoc.Words(_Error),
                              check=lambda d: seen.append(d) or (_ for _ in ()).throw(_Error("other kind")))
    assert seen == [{"kind": "other"}]


@pytest.mark.parametrize("text", [
    '"' + '\\"' * 200_000,  # an unterminated string of escaped quotes: the bracket count stays linear
    '"' * 200_001,
    "[" * 50 + '"]]]' + "]" * 50,
])
def test_malformed_text_is_refused_as_not_json(text):
    with pytest.raises(_Error, match="is not valid JSON"):
        jsondoc.parse_text(text, jsondoc.Words(_Error))


def test_brackets_inside_strings_do_not_count_as_nesting():
    text = json.dumps({"a": "[[[[{{{{" * 100, "b": [[["]]]"]]]})
    assert jsondoc.nesting(text) == 4
    assert jsondoc.parse_text(text, jsondoc.Words(_Error))["b"] == [[["]]]"]]]
