"""The plugin host: hook specifications, discovery and isolation of plugins."""

from .hookspecs import HOOK_API_VERSION, hookimpl, hookspec
from .manager import PluginHost, PluginRecord, get_host, reset_host

__all__ = ["HOOK_API_VERSION", "hookimpl", "hookspec", "PluginHost", "PluginRecord", "get_host", "reset_host"]
