import pytest

from admin_config.settings import AdminConfigSettings
from mdm_endpoint.settings import MdmEndpointSettings
from mdmscep_common.settings import CommonSettings, SettingsError
from profile_processor.settings import ProfileProcessorSettings
from scep_proxy.settings import ScepProxySettings

KEY = "unit-test-server-private-key-0123456789"
PREVIOUS_KEY = "unit-test-previous-server-key-0123456789"
CORE = {"DATABASE_URL": "postgresql://db.example/mdmscep", "AMQP_URL": "amqp://broker.example//"}

# Each service's own variables (README "Configuration"); SERVER_PRIVATE_KEY is its own only in
# the services that encrypt or decrypt secrets at rest.
OWN = {
    AdminConfigSettings: {"SERVER_PRIVATE_KEY": KEY, "ADMIN_API_TOKEN": "tok-123456",
                          "ADMIN_HTTP_PORT": "9080", "PROCESSOR_GRPC_ADDR": "processor:1",
                          "ACTIVITY_RETENTION_DAYS": "30"},
    MdmEndpointSettings: {"SERVER_PRIVATE_KEY": KEY, "ENROLL_SECRET": "enroll-987",
                          "MDM_HTTP_PORT": "9081", "APNS_URL": "https://apns.example",
                          "MDM_HTTP_THREADS": "3"},
    ProfileProcessorSettings: {"SERVER_PRIVATE_KEY": KEY, "PROCESSOR_GRPC_PORT": "6001",
                               "SCEP_CODE_TTL": "60", "MDM_GRPC_ADDR": "mdm:2"},
    ScepProxySettings: {"SCEP_PROXY_HTTP_PORT": "9082", "PROCESSOR_GRPC_ADDR": "processor:1",
                        "SCEP_PROXY_CA_CONCURRENCY": "7"},
}
# Variables of other services that a service must not need nor read.
FOREIGN = {
    AdminConfigSettings: ("APNS_URL", "APNS_CERT", "ENROLL_SECRET", "IDENTITY_SCEP_URL",
                          "MDM_IDENTITY_CA_CERTS", "SCEP_CODE_TTL", "MDM_HTTP_THREADS"),
    MdmEndpointSettings: ("ADMIN_API_TOKEN", "SCEP_CODE_TTL", "SCEP_PROXY_CA_CONCURRENCY",
                          "ACTIVITY_RETENTION_DAYS"),
    ProfileProcessorSettings: ("ADMIN_API_TOKEN", "ENROLL_SECRET", "APNS_URL",
                               "SCEP_PROXY_CA_CONCURRENCY", "MDM_HTTP_THREADS"),
    ScepProxySettings: ("SERVER_PRIVATE_KEY", "ADMIN_API_TOKEN", "ENROLL_SECRET", "APNS_URL",
                        "APNS_CERT", "IDENTITY_SCEP_CHALLENGE", "SCEP_CODE_TTL"),
}


def test_core_defaults_follow_the_contract():
    s = CommonSettings.from_env({})
    assert s.database_url == "postgresql://postgres@127.0.0.1:5432/mdmscep"
    assert s.amqp_url == "amqp://guest:guest@127.0.0.1:5672//"
    assert (s.http_workers, s.http_threads, s.http_bind_address) == (2, 8, "0.0.0.0")
    assert (s.prune_interval, s.prune_batch_size, s.trusted_proxies) == (600.0, 5000, ())
    assert s.grpc_bind_address == "127.0.0.1" and s.secret_values() == []


def test_service_defaults_follow_the_contract():
    admin = AdminConfigSettings.from_env({"SERVER_PRIVATE_KEY": KEY})
    assert admin.admin_http_port == 8080
    assert (admin.processor_grpc_addr, admin.mdm_grpc_addr, admin.scep_proxy_grpc_addr) == (
        "127.0.0.1:50051", "127.0.0.1:50052", "127.0.0.1:50053")
    mdm = MdmEndpointSettings.from_env({"SERVER_PRIVATE_KEY": KEY})
    assert (mdm.mdm_http_port, mdm.mdm_grpc_port, mdm.mdm_http_threads) == (8081, 50052, 2)
    assert mdm.mdm_public_url == "http://127.0.0.1:8081"
    assert mdm.apns_url == "https://api.push.apple.com" and mdm.enroll_secret is None
    processor = ProfileProcessorSettings.from_env({"SERVER_PRIVATE_KEY": KEY})
    assert (processor.profile_reconcile_interval, processor.profile_verify_interval,
            processor.scep_code_ttl) == (30, 3600, 3600)
    assert processor.scep_proxy_public_url == "http://127.0.0.1:8082"
    proxy = ScepProxySettings.from_env({})
    assert (proxy.scep_proxy_http_port, proxy.scep_proxy_grpc_port) == (8082, 50053)
    assert (proxy.scep_proxy_ca_concurrency, proxy.ca_request_retention_days) == (4, 1.0)


@pytest.mark.parametrize("settings_class", list(OWN))
def test_each_service_starts_with_only_its_own_variables(settings_class):
    s = settings_class.from_env({**CORE, **OWN[settings_class]})
    assert s.database_url == CORE["DATABASE_URL"] and s.amqp_url == CORE["AMQP_URL"]


@pytest.mark.parametrize("settings_class", list(OWN))
def test_each_service_ignores_the_other_services_variables(settings_class):
    """Another service's variable, even unusable, neither stops nor reaches this service."""
    env = {**CORE, **OWN[settings_class]}
    foreign = {name: "not-usable" for name in FOREIGN[settings_class]}
    s = settings_class.from_env({**env, **foreign})
    assert s == settings_class.from_env(env)
    assert "not-usable" not in repr(s) and "not-usable" not in s.secret_values()


def test_the_proxy_never_holds_the_encryption_key_even_when_it_is_set():
    s = ScepProxySettings.from_env({"SERVER_PRIVATE_KEY": KEY, "SERVER_PRIVATE_KEY_PREVIOUS":
                                    PREVIOUS_KEY, "ADMIN_API_TOKEN": "tok-123456"})
    assert not hasattr(s, "server_private_key")
    assert not hasattr(s, "server_private_key_previous")
    held = repr(s) + repr(vars(s)) + repr(s.secret_values())
    assert KEY not in held and PREVIOUS_KEY not in held and "tok-123456" not in held


def test_the_admin_worker_does_not_need_the_encryption_key():
    s = AdminConfigSettings.from_env({}, needs_server_private_key=False)
    assert s.server_private_key is None
    with pytest.raises(SettingsError, match="SERVER_PRIVATE_KEY is required"):
        AdminConfigSettings.from_env({})


def test_the_push_worker_does_not_need_the_encryption_key_nor_reads_it_when_set():
    s = MdmEndpointSettings.from_env({}, needs_server_private_key=False)
    assert s.server_private_key is None and s.server_private_key_previous is None
    # Set (even to a placeholder the other processes refuse), it is neither checked nor held.
    s = MdmEndpointSettings.from_env({"SERVER_PRIVATE_KEY": KEY, "SERVER_PRIVATE_KEY_PREVIOUS":
                                      "x" * 32}, needs_server_private_key=False)
    held = repr(s) + repr(vars(s)) + repr(s.secret_values())
    assert KEY not in held and "x" * 32 not in held
    s = MdmEndpointSettings.from_env({"SERVER_PRIVATE_KEY": "short"}, needs_server_private_key=False)
    assert s.server_private_key is None
    with pytest.raises(SettingsError, match="SERVER_PRIVATE_KEY is required"):
        MdmEndpointSettings.from_env({})


@pytest.mark.parametrize("settings_class", [AdminConfigSettings, MdmEndpointSettings,
                                            ProfileProcessorSettings])
def test_a_missing_encryption_key_is_named(settings_class):
    with pytest.raises(SettingsError, match="SERVER_PRIVATE_KEY is required"):
        settings_class.from_env({**CORE})


def test_the_mdm_endpoint_has_its_own_thread_count():
    s = MdmEndpointSettings.from_env({"SERVER_PRIVATE_KEY": KEY, "HTTP_THREADS": "16",
                                      "MDM_HTTP_THREADS": "6"})
    assert (s.http_threads, s.mdm_http_threads) == (16, 6)


def test_grpc_addresses_follow_ports_unless_set():
    s = AdminConfigSettings.from_env({"SERVER_PRIVATE_KEY": KEY, "MDM_GRPC_PORT": "6000",
                                      "PROCESSOR_GRPC_ADDR": "processor:1"})
    assert s.mdm_grpc_addr == "127.0.0.1:6000"
    assert s.processor_grpc_addr == "processor:1"


@pytest.mark.parametrize("settings_class, env, message", [
    (MdmEndpointSettings, {"SERVER_PRIVATE_KEY": "short"}, "at least 32 characters"),
    (AdminConfigSettings, {"ADMIN_HTTP_PORT": "http"}, "ADMIN_HTTP_PORT must be an integer"),
    (MdmEndpointSettings, {"MDM_GRPC_PORT": "70000"}, "MDM_GRPC_PORT must be a TCP port"),
    (AdminConfigSettings, {"MDM_GRPC_PORT": "70000"}, "MDM_GRPC_PORT must be a TCP port"),
    (ScepProxySettings, {"DATABASE_URL": "mysql://x/y"}, "DATABASE_URL"),
    (ProfileProcessorSettings, {"SCEP_CODE_TTL": "0"}, "SCEP_CODE_TTL must be at least 1"),
    (MdmEndpointSettings, {"MDM_PUBLIC_URL": "nope"}, "MDM_PUBLIC_URL"),
    (MdmEndpointSettings, {"MDM_HTTP_THREADS": "0"}, "MDM_HTTP_THREADS must be at least 1"),
    (ScepProxySettings, {"SCEP_PROXY_CA_CONCURRENCY": "0"},
     "SCEP_PROXY_CA_CONCURRENCY must be at least 1"),
    (ScepProxySettings, {"SCEP_PROXY_GRPC_METRICS_PORT": "70000"},
     "SCEP_PROXY_GRPC_METRICS_PORT must be a TCP port"),
])
def test_bad_configuration_names_the_variable(settings_class, env, message):
    with pytest.raises(SettingsError, match=message):
        settings_class.from_env({"SERVER_PRIVATE_KEY": KEY, **env})


@pytest.mark.parametrize("settings_class, expected", [
    (AdminConfigSettings, {KEY, PREVIOUS_KEY, "tok-123456"}),
    (MdmEndpointSettings, {KEY, PREVIOUS_KEY, "enroll-987", "challenge-555"}),
    (ProfileProcessorSettings, {KEY, PREVIOUS_KEY}),
    (ScepProxySettings, set()),
])
def test_each_service_holds_only_its_own_secrets_and_not_in_repr(settings_class, expected):
    every_secret = {"SERVER_PRIVATE_KEY": KEY, "SERVER_PRIVATE_KEY_PREVIOUS": PREVIOUS_KEY,
                    "ADMIN_API_TOKEN": "tok-123456", "ENROLL_SECRET": "enroll-987",
                    "IDENTITY_SCEP_CHALLENGE": "challenge-555"}
    s = settings_class.from_env(every_secret)
    assert set(s.secret_values()) == expected
    text = repr(s)
    assert not any(secret in text for secret in every_secret.values())
