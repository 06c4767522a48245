"""One object with every service's settings, for tests that build several services' apps from
one environment (services load only their own class: each package's settings.py)."""

from __future__ import annotations

from admin_config.settings import AdminConfigSettings
from mdm_endpoint.settings import MdmEndpointSettings
from profile_processor.settings import ProfileProcessorSettings
from scep_proxy.settings import ScepProxySettings


class AllSettings:
    """An attribute is read from the first service's settings that has it (the core is the
    same in all)."""

    def __init__(self, env: dict[str, str]):
        self._parts = [AdminConfigSettings.from_env(env), MdmEndpointSettings.from_env(env),
                       ProfileProcessorSettings.from_env(env), ScepProxySettings.from_env(env)]

    def __getattr__(self, name: str):
        for part in self._parts:
            if hasattr(part, name):
                return getattr(part, name)
        raise AttributeError(name)

    def secret_values(self) -> list[str]:
        return sorted({value for part in self._parts for value in part.secret_values()})

    def __repr__(self) -> str:
        return f"AllSettings({', '.join(repr(part) for part in self._parts)})"


def load_settings(env: dict[str, str]) -> AllSettings:
    """Every service's settings from `env` (which must hold SERVER_PRIVATE_KEY); raises
    SettingsError naming the variable."""
    return AllSettings(env)
