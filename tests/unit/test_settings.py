import pytest

from mdmscep_common.settings import SettingsError, load_settings

KEY = "unit-test-server-private-key-0123456789"


def test_defaults_follow_the_contract():
    s = load_settings({"SERVER_PRIVATE_KEY": KEY})
    assert s.database_url == "postgresql://postgres@127.0.0.1:5432/mdmscep"
    assert s.amqp_url == "amqp://guest:guest@127.0.0.1:5672//"
    assert (s.admin_http_port, s.mdm_http_port, s.scep_proxy_http_port) == (8080, 8081, 8082)
    assert (s.processor_grpc_port, s.mdm_grpc_port, s.scep_proxy_grpc_port) == (50051, 50052, 50053)
    assert s.scep_proxy_grpc_addr == "127.0.0.1:50053"
    assert s.mdm_public_url == "http://127.0.0.1:8081"
    assert s.scep_proxy_public_url == "http://127.0.0.1:8082"
    assert s.apns_url == "https://api.push.apple.com"
    assert (s.profile_reconcile_interval, s.profile_verify_interval, s.scep_code_ttl) == (30, 3600, 3600)
    assert s.enroll_secret is None
    assert (s.http_workers, s.http_threads, s.mdm_http_threads) == (2, 8, 2)


def test_the_mdm_endpoint_has_its_own_thread_count():
    s = load_settings({"SERVER_PRIVATE_KEY": KEY, "HTTP_THREADS": "16", "MDM_HTTP_THREADS": "6"})
    assert (s.http_threads, s.mdm_http_threads) == (16, 6)


def test_grpc_addresses_follow_ports_unless_set():
    s = load_settings({"SERVER_PRIVATE_KEY": KEY, "MDM_GRPC_PORT": "6000",
                       "PROCESSOR_GRPC_ADDR": "processor:1"})
    assert s.mdm_grpc_addr == "127.0.0.1:6000"
    assert s.processor_grpc_addr == "processor:1"


@pytest.mark.parametrize("env, message", [
    ({}, "SERVER_PRIVATE_KEY is required"),
    ({"SERVER_PRIVATE_KEY": "short"}, "at least 32 characters"),
    ({"SERVER_PRIVATE_KEY": KEY, "ADMIN_HTTP_PORT": "http"}, "ADMIN_HTTP_PORT must be an integer"),
    ({"SERVER_PRIVATE_KEY": KEY, "MDM_GRPC_PORT": "70000"}, "MDM_GRPC_PORT must be a TCP port"),
    ({"SERVER_PRIVATE_KEY": KEY, "DATABASE_URL": "mysql://x/y"}, "DATABASE_URL"),
    ({"SERVER_PRIVATE_KEY": KEY, "SCEP_CODE_TTL": "0"}, "SCEP_CODE_TTL must be at least 1"),
    ({"SERVER_PRIVATE_KEY": KEY, "MDM_PUBLIC_URL": "nope"}, "MDM_PUBLIC_URL"),
    ({"SERVER_PRIVATE_KEY": KEY, "MDM_HTTP_THREADS": "0"}, "MDM_HTTP_THREADS must be at least 1"),
])
def test_bad_configuration_names_the_variable(env, message):
    with pytest.raises(SettingsError, match=message):
        load_settings(env)


def test_secrets_are_not_in_repr():
    s = load_settings({"SERVER_PRIVATE_KEY": KEY, "ADMIN_API_TOKEN": "tok-123456",
                       "ENROLL_SECRET": "enroll-987"})
    text = repr(s)
    assert KEY not in text and "tok-123456" not in text and "enroll-987" not in text
    assert set(s.secret_values()) == {KEY, "tok-123456", "enroll-987"}
