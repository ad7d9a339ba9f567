"""A connection's settings, read and validated: the key's characters, the extras, proxy and CA choice. No server."""

from __future__ import annotations

import json
import logging
import ssl
from pathlib import Path
from typing import Any

import pytest
from airflow.sdk import Connection

from airflow_provider_mindvideo import CONN_FIELDS
from airflow_provider_mindvideo.client.errors import AuthenticationError, InputValidationError, MindVideoError
from airflow_provider_mindvideo.client.settings import (
    ClientSettings,
    bypasses_proxy,
    environment_proxy,
    settings_from_connection,
)
from tests.tls import make_ca

KEY = "mv_live_0123456789abcdef"


def conn(extra: dict[str, Any] | None = None, **fields: Any) -> Connection:
    fields.setdefault("password", KEY)
    return Connection(
        conn_id="mindvideo_default", conn_type="mindvideo", extra=json.dumps(extra) if extra else None, **fields
    )


# -- the API key ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("key", "problem"),
    [
        ("mv_live_0123\n456789", "a line break (LF) at character 13"),
        ("mv_live_0123\r\n456789", "a line break (CR) at character 13"),
        ("mv_live_\x000123456789", "a NUL character at character 9"),
        ("mv_live_0123\u200b456789", "a non-ASCII character (U+200B ZERO WIDTH SPACE) at character 13"),
        ("mv_live 0123456789", "a space at character 8"),
        ("mv_live_0123\t456789", "a tab at character 13"),
        ("mv_live_\x1b0123", "a control character (U+001B) at character 9"),
        ("mv_live_é0123", "a non-ASCII character (U+00E9 LATIN SMALL LETTER E WITH ACUTE) at character 9"),
    ],
)
def test_a_key_with_a_character_no_header_may_carry_is_refused_naming_where(key: str, problem: str) -> None:
    with pytest.raises(AuthenticationError) as info:
        settings_from_connection(conn(password=key))
    message = str(info.value)
    assert problem in message
    assert "API key" in message
    for part in key.split():  # not the key, nor any sizable piece of it
        assert part not in message or len(part) < 8
    assert info.value.retryable is False


def test_surrounding_whitespace_of_a_pasted_key_is_ignored() -> None:
    assert settings_from_connection(conn(password=f"  {KEY}\r\n")).api_key == KEY


def test_a_key_given_directly_is_checked_too() -> None:
    with pytest.raises(AuthenticationError, match="line break"):
        ClientSettings(base_url="https://api.mindvideo.ai", api_key="mv_live_a\nb")


# -- extras -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("extra", "field_and_value"),
    [
        ({"max_retries": "many"}, 'extra max_retries = "many" must be a whole number >= 0'),
        ({"max_retries": -1}, "extra max_retries = -1 must be a whole number >= 0"),
        ({"max_retries": 2.5}, "extra max_retries = 2.5 must be a whole number >= 0"),
        ({"max_retries": True}, "extra max_retries = true must be a whole number >= 0"),
        ({"timeout": -1}, "extra timeout = -1 must be a number of seconds > 0"),
        ({"timeout": 0}, "extra timeout = 0 must be a number of seconds > 0"),
        ({"timeout": "nan"}, 'extra timeout = "nan" must be a number of seconds > 0'),
        ({"timeout": [30]}, "extra timeout = [30] must be a number of seconds > 0"),
        ({"max_concurrency": True}, "extra max_concurrency = true must be a whole number >= 1"),
        ({"max_concurrency": 0}, "extra max_concurrency = 0 must be a whole number >= 1"),
        ({"max_requests_per_second": False}, "extra max_requests_per_second = false must be a number > 0"),
        ({"max_requests_per_second": "-2"}, 'extra max_requests_per_second = "-2" must be a number > 0'),
        ({"allow_insecure_http": "maybe"}, 'extra allow_insecure_http = "maybe" must be true or false'),
        ({"proxy": 3128}, "extra proxy = 3128 must be an http:// or https:// proxy URL"),
    ],
)
def test_bad_extras_are_refused_naming_field_and_value(extra: dict[str, Any], field_and_value: str) -> None:
    with pytest.raises(InputValidationError) as info:
        settings_from_connection(conn(extra))
    assert field_and_value in str(info.value)
    assert "'mindvideo_default'" in str(info.value)
    assert info.value.retryable is False


def test_every_bad_extra_is_named_at_once() -> None:
    with pytest.raises(InputValidationError) as info:
        settings_from_connection(conn({"max_retries": "many", "timeout": -1}))
    assert "max_retries" in str(info.value)
    assert "timeout" in str(info.value)


@pytest.mark.parametrize("empty", [None, ""])
def test_null_or_empty_extras_mean_the_default(empty: Any) -> None:
    extra = dict.fromkeys(
        ("timeout", "max_retries", "max_concurrency", "max_requests_per_second", "allow_insecure_http", "proxy"),
        empty,
    )
    settings = settings_from_connection(conn(extra | {"ca_bundle": empty}))
    assert (settings.timeout, settings.max_retries) == (30.0, 5)
    assert (settings.max_concurrency, settings.max_requests_per_second) == (None, None)
    assert (settings.allow_insecure_http, settings.proxy, settings.ca_bundle) == (False, None, None)


def test_numbers_written_as_text_are_read() -> None:
    # A URI-form connection (AIRFLOW_CONN_X=mindvideo://...?max_retries=2) gives every extra as text.
    settings = settings_from_connection(
        conn({"timeout": "12.5", "max_retries": " 2 ", "max_concurrency": "4", "allow_insecure_http": "true"})
    )
    assert (settings.timeout, settings.max_retries, settings.max_concurrency) == (12.5, 2, 4)
    assert settings.allow_insecure_http is True


def test_an_extra_that_is_not_an_object_is_refused() -> None:
    listed = Connection(conn_id="mindvideo_default", conn_type="mindvideo", password=KEY, extra="[1, 2]")
    with pytest.raises(InputValidationError, match="extra must be a JSON object, not list"):
        settings_from_connection(listed)


def test_unknown_extras_are_ignored_and_named_in_a_warning(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING)
    settings = settings_from_connection(conn({"max_retry": 3, "region": "eu", "timout": 9, "timeout": 5}))
    assert settings.timeout == 5.0
    assert (
        "does not use, ignored: 'max_retry' (did you mean 'max_retries'?), 'region', "
        "'timout' (did you mean 'timeout'?)" in caplog.text
    )
    assert "'eu'" not in caplog.text  # names only: an unknown extra might hold a secret


def test_hook_overrides_are_checked_like_extras() -> None:
    with pytest.raises(InputValidationError, match=r"timeout = -1: must be a number of seconds > 0"):
        settings_from_connection(conn(), timeout=-1)
    with pytest.raises(InputValidationError, match=r"max_retries = True: must be a whole number >= 0"):
        settings_from_connection(conn(), max_retries=True)  # type: ignore[arg-type]
    assert settings_from_connection(conn({"max_retries": 9}), max_retries=0).max_retries == 0


def test_settings_stay_hashable_and_keep_secrets_out_of_repr() -> None:
    settings = settings_from_connection(conn({"proxy": "http://me:proxy-pass@proxy.corp:3128", "ca_bundle": "/x"}))
    assert {settings: 1}[
        settings_from_connection(conn({"proxy": "http://me:proxy-pass@proxy.corp:3128", "ca_bundle": "/x"}))
    ]
    assert KEY not in repr(settings)
    assert "proxy-pass" not in repr(settings)


def test_a_bad_base_url_is_refused() -> None:
    with pytest.raises(InputValidationError, match="a line break"):
        settings_from_connection(conn(host="https://api.mindvideo.ai\n/v1"))


def test_the_form_offers_proxy_and_ca_bundle() -> None:
    assert {"proxy", "ca_bundle"} <= set(CONN_FIELDS)
    assert CONN_FIELDS["timeout"]["schema"]["exclusiveMinimum"] == 0


# -- proxy ------------------------------------------------------------------------------------


def settings(**extra: Any) -> ClientSettings:
    return settings_from_connection(conn(extra, host="https://api.mindvideo.ai"))


@pytest.mark.parametrize(
    ("environ", "proxy"),
    [
        ({}, None),
        ({"HTTPS_PROXY": "http://proxy.corp:3128"}, "http://proxy.corp:3128"),
        ({"https_proxy": "http://lower:3128", "HTTPS_PROXY": "http://upper:3128"}, "http://lower:3128"),
        ({"HTTP_PROXY": "http://proxy.corp:3128"}, None),  # the base URL is https://
        ({"ALL_PROXY": "proxy.corp:3128"}, "http://proxy.corp:3128"),  # no scheme: http://, as curl
        ({"HTTPS_PROXY": "http://p:3128", "NO_PROXY": "mindvideo.ai"}, None),
        ({"HTTPS_PROXY": "http://p:3128", "NO_PROXY": "localhost, .mindvideo.ai"}, None),
        ({"HTTPS_PROXY": "http://p:3128", "no_proxy": "*"}, None),
        ({"HTTPS_PROXY": "http://p:3128", "NO_PROXY": "api.mindvideo.ai:443"}, None),
        ({"HTTPS_PROXY": "http://p:3128", "NO_PROXY": "api.mindvideo.ai:8443"}, "http://p:3128"),
        ({"HTTPS_PROXY": "http://p:3128", "NO_PROXY": "notmindvideo.ai,example.com"}, "http://p:3128"),
    ],
)
def test_the_environment_decides_the_proxy_unless_the_connection_does(
    environ: dict[str, str], proxy: str | None
) -> None:
    assert settings().proxy_url(environ) == proxy
    explicit = settings(proxy="http://mine:8080")
    assert explicit.proxy_url(environ) == "http://mine:8080"  # the extra wins, NO_PROXY or not


@pytest.mark.parametrize(
    ("host", "no_proxy", "bypassed"),
    [
        ("127.0.0.1", "127.0.0.0/8", True),
        ("10.1.2.3", "127.0.0.1,192.168.0.0/16", False),
        ("::1", "::1", True),
        ("::1", "[::1]:80", True),
        ("sub.api.example.com", "*.example.com", True),
        ("example.com", "*.example.com", True),
        ("badexample.com", "example.com", False),
        ("anything", "", False),
    ],
)
def test_no_proxy_entries(host: str, no_proxy: str, bypassed: bool) -> None:
    assert bypasses_proxy(host, 80, no_proxy) is bypassed


@pytest.mark.parametrize(
    ("where", "environ", "extra"),
    [
        ("extra proxy", {}, {"proxy": "socks5://proxy.corp:1080"}),
        ("the environment's HTTPS_PROXY", {"HTTPS_PROXY": "socks5h://proxy.corp:1080"}, {}),
    ],
)
def test_proxies_this_provider_cannot_use_are_refused(where: str, environ: dict[str, str], extra: Any) -> None:
    with pytest.raises(InputValidationError, match=f"{where} = 'socks5h?://proxy.corp:1080' must be an http://"):
        settings(**extra).proxy_url(environ)


def test_a_proxy_password_never_reaches_an_error() -> None:
    with pytest.raises(InputValidationError) as info:
        settings(proxy="ftp://me:s3cret-proxy@proxy.corp:21")
    assert "s3cret-proxy" not in str(info.value)
    assert "me:***@proxy.corp:21" in str(info.value)
    with pytest.raises(InputValidationError) as info:
        environment_proxy("https://api.mindvideo.ai", {"HTTPS_PROXY": "socks5://me:s3cret-proxy@p:1"})
    assert "s3cret-proxy" not in str(info.value)


# -- TLS trust -------------------------------------------------------------------------------


def test_ca_bundle_is_the_only_trust_when_set(tmp_path: Path) -> None:
    default = settings().tls_context()
    assert default.verify_mode is ssl.CERT_REQUIRED and default.check_hostname
    assert default.cert_store_stats()["x509_ca"] > 50  # the public CAs
    bundle = tmp_path / "ca.pem"
    bundle.write_text(make_ca().pem)
    own = settings(ca_bundle=str(bundle)).tls_context()
    assert own.verify_mode is ssl.CERT_REQUIRED and own.check_hostname
    assert own.cert_store_stats()["x509_ca"] == 1


@pytest.mark.parametrize("content", [None, "not a certificate"])
def test_a_ca_bundle_that_cannot_be_loaded_is_named(tmp_path: Path, content: str | None) -> None:
    bundle = tmp_path / "ca.pem"
    if content is not None:
        bundle.write_text(content)
    with pytest.raises(InputValidationError, match=r"extra ca_bundle = '.*ca\.pem': cannot load CA certificates"):
        settings(ca_bundle=str(bundle)).tls_context()


def test_every_settings_error_is_a_provider_error() -> None:
    for extra in ({"timeout": "x"}, {"proxy": "gopher://x"}):
        with pytest.raises(MindVideoError):
            settings(**extra)
