"""Layer 4: the plugin host. Hook specifications (``hookspecs``), discovery through entry points
and the guard around every plugin call (``manager``), and the test kit plugin authors run
(``testkit``). It may import ``engine``, ``algorithms``, ``data`` and ``errors``, never
``app``, ``gui`` or ``cli``. Plugin authors import from :mod:`metastudio.api`, not from here."""

from metastudio.plugins.hookspecs import HOOK_API_VERSION, hookimpl, hookspec
from metastudio.plugins.manager import PluginHost, PluginRecord, get_host, reset_host

__all__ = ["HOOK_API_VERSION", "hookimpl", "hookspec", "PluginHost", "PluginRecord", "get_host", "reset_host"]
