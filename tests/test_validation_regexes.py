"""Issue 9, "Limits on input": every validation regex matches the whole text, in ASCII.

Python's `re` has two traps: `$` also matches before a final newline (so
`^x$` with `.match` accepts "x\\n"), and `\\d` is any Unicode digit (so
"٨٠٨٠" is a port, and int() even turns it into 8080). IGNORECASE adds a
third: `[a-z]` then matches the Kelvin sign (U+212A) and the long s (U+017F).
Pydantic's `Field(pattern=...)` runs on Rust's regex engine, where `$` is the
end of the text; the tests below pin that too, for every pattern we declare.
"""

from __future__ import annotations

import importlib
import pkgutil
import re
import uuid
from typing import Any

import pytest
from pydantic import BaseModel, ValidationError

import hypercore
from hypercore.beacon.keys import generate
from hypercore.beacon.tags import Beacon, BeaconInvalid, decode, encode
from hypercore.api.models import SpawnRequest
from hypercore.workload import LocalSpawnRequest, WorkloadSpec

# --------------------------------------------------------------------------- WorkloadSpec


def spec_error(**fields: Any) -> str:
    with pytest.raises(ValidationError) as info:
        WorkloadSpec(**fields)
    return str(info.value)


@pytest.mark.parametrize("image", ["busybox\n", "busybox:latest\n", "busybo\u212a", "\u017fusybox", "busybox\x00"])
def test_image_ref_with_trailing_newline_or_non_ascii_letters_is_refused(image: str) -> None:
    assert "image reference" in spec_error(image_ref=image)


def test_image_refs_that_are_fine_still_pass() -> None:
    for image in ("busybox", "BusyBox:1.36", "registry:5000/app@sha256:abc", "ghcr.io/a/b+c:1-2"):
        assert WorkloadSpec(image_ref=image).image_ref == image


@pytest.mark.parametrize("port", ["18555:80\n", "٨٠٨٠:80", "8080:٨٠", "8080:80/tcp\n", "８０:80", "8080:80\n/tcp"])
def test_port_mapping_with_trailing_newline_or_unicode_digits_is_refused(port: str) -> None:
    assert "port mapping" in spec_error(image_ref="busybox", ports=[port])


def test_port_mappings_that_are_fine_still_pass() -> None:
    assert WorkloadSpec(image_ref="busybox", ports=["8080:80", "1:65535/udp", "53:53/tcp"]).ports


@pytest.mark.parametrize("key", ["PATH\n", "A\n", "١A", "Ä", "A B", "A=B", "1A", "", "A\x00"])
def test_environment_variable_names_must_be_posix_ascii(key: str) -> None:
    assert "environment variable name" in spec_error(command="true", env={key: "x"})


def test_environment_values_cannot_hold_nul() -> None:
    assert "NUL" in spec_error(command="true", env={"A": "x\x00y"})
    assert WorkloadSpec(command="true", env={"_A1": "any text\nwith newlines ✓"}).env


def test_command_and_args_cannot_hold_nul() -> None:
    assert "NUL" in spec_error(command="echo a\x00b")
    assert "NUL" in spec_error(image_ref="busybox", args=["echo", "a\x00"])


# --------------------------------------------------------------------------- pydantic patterns


def _canonical_id() -> str:
    return str(uuid.UUID(int=0x1234))


def _spawn_request(**over: Any) -> dict[str, Any]:
    return {"id": _canonical_id(), "spec": {"command": "true"}, **over}


def _pattern_cases() -> list[tuple[str, Any, str, str]]:
    """(label, validate(value), good value, field) for every Field(pattern=...) a request carries."""
    from hypercore.api.models import SpawnRequest
    from hypercore.failover.model import ManifestEntry
    from hypercore.policy import Policy

    def spawn_request_id(v: str) -> Any:
        return SpawnRequest.model_validate({"spec": {"command": "true"}, "request_id": v})

    def local_id(v: str) -> Any:
        return LocalSpawnRequest.model_validate(_spawn_request(id=v))

    def local_owner(v: str) -> Any:
        return LocalSpawnRequest.model_validate(_spawn_request(owner=v))

    def manifest_owner(v: str) -> Any:
        return ManifestEntry.model_validate({**_manifest_entry(), "owner": v})

    def manifest_id(v: str) -> Any:
        return ManifestEntry.model_validate({**_manifest_entry(), "id": v})

    def policy_name(v: str) -> Any:
        return Policy.model_validate({"name": v})

    def capability(v: str) -> Any:
        return Policy.model_validate({"rules": {"required_capabilities": [v]}})

    return [
        ("SpawnRequest.request_id", spawn_request_id, "req-1:a.b"),
        ("LocalSpawnRequest.id", local_id, _canonical_id()),
        ("LocalSpawnRequest.owner", local_owner, "alice@example"),
        ("ManifestEntry.id", manifest_id, _canonical_id()),
        ("ManifestEntry.owner", manifest_owner, "alice"),
        ("Policy.name", policy_name, "my-policy"),
        ("Policy capability", capability, "gpu"),
    ]


def _manifest_entry() -> dict[str, Any]:
    return {"id": _canonical_id(), "spec": {"command": "true"}, "state": "running"}


@pytest.mark.parametrize("case", range(7), ids=[c[0] for c in _pattern_cases()])
def test_pydantic_patterns_refuse_a_trailing_newline(case: int) -> None:
    label, validate, good = _pattern_cases()[case]
    validate(good)  # the good value passes...
    for bad in (good + "\n", good + "\r\n", "\n" + good):
        with pytest.raises(ValidationError):
            validate(bad)  # ...and no newline rides along with it


def test_no_model_switches_pydantic_to_pythons_regex_engine() -> None:
    """Under `regex_engine="python-re"` a pattern's `$` would accept a trailing newline again."""
    offenders = []
    for model in _all_models():
        if model.model_config.get("regex_engine") == "python-re":
            offenders.append(model.__qualname__)
    assert offenders == []


# --------------------------------------------------------------------------- beacon tags

NOW = 1_800_000_000


def _signed(**kw: Any) -> dict[str, str]:
    values: dict[str, Any] = dict(api="127.0.0.1:8001", timestamp=NOW, latency_ms=1.0, capabilities=("exec",))
    values.update(kw)
    return encode(Beacon(**values), "n1", generate())


@pytest.mark.parametrize("api", ["127.0.0.1:8001\n", "127.0.0.1:٨٠٠١", "[::1]:８００１", "host\n:8001"])
def test_signed_beacon_api_address_must_be_ascii_host_port(api: str) -> None:
    with pytest.raises(BeaconInvalid, match="api address"):
        decode(_signed(api=api), "n1", NOW)


@pytest.mark.parametrize("cap", ["exec\n", "gpu\n", "ｅxec"])
def test_signed_beacon_capabilities_must_be_whole_ascii_names(cap: str) -> None:
    with pytest.raises(BeaconInvalid, match="capabilities"):
        decode(_signed(capabilities=(cap,)), "n1", NOW)


def test_good_beacon_still_decodes() -> None:
    got = decode(_signed(api="[::1]:8001", capabilities=("container", "exec")), "n1", NOW)
    assert got.api == "[::1]:8001" and got.capabilities == ("container", "exec")


# --------------------------------------------------------------------------- identity names


def test_identity_names_and_ttls_are_ascii_and_whole() -> None:
    from hypercore.identity.pki import NODE_NAME_RE
    from hypercore.identity.tokens import USER_NAME_RE, parse_ttl

    for rx in (NODE_NAME_RE, USER_NAME_RE):
        assert not rx.fullmatch("node1\n") and not rx.fullmatch("nodé") and not rx.fullmatch("n١")
    for bad in ("٣h", "１h", "3h\nx"):
        with pytest.raises(Exception):
            parse_ttl(bad)


# --------------------------------------------------------------------------- the audit


def _modules() -> list[Any]:
    out = []
    for info in pkgutil.walk_packages(hypercore.__path__, "hypercore."):
        if info.name.endswith("__main__"):
            continue  # importing it runs the command
        try:
            out.append(importlib.import_module(info.name))
        except ImportError:  # pragma: no cover - an optional part missing here
            continue
    return out


def _all_models() -> list[type[BaseModel]]:
    seen: dict[int, type[BaseModel]] = {}
    for module in _modules():
        for value in vars(module).values():
            if isinstance(value, type) and issubclass(value, BaseModel) and value.__module__.startswith("hypercore"):
                seen[id(value)] = value
    return list(seen.values())


# Patterns that only search tool output (podman's error text), never validate input.
_SEARCH_ONLY = {"GONE", "NOT_FOUND_IMAGE"}


def _compiled_patterns() -> dict[int, tuple[set[str], re.Pattern[str]]]:
    """Every module-level compiled pattern, once, with every name it goes by."""
    found: dict[int, tuple[set[str], re.Pattern[str]]] = {}
    for module in _modules():
        for name, value in vars(module).items():
            if isinstance(value, re.Pattern) and name not in _SEARCH_ONLY:
                found.setdefault(id(value), (set(), value))[0].add(f"{module.__name__}.{name}")
    return found


# Known and reported to the owners of those files (issue 9); not validated here.
_REPORTED_ELSEWHERE = {
    "hypercore.runtime.oci_engine.CONTAINER_ID",  # `^…$` with .match on podman's answer
    "hypercore.config._DURATION",  # `\d` in --gc-after
}


def test_every_compiled_validation_regex_is_ascii_and_anchored_for_fullmatch() -> None:
    bad = []
    for names, rx in _compiled_patterns().values():
        if names & _REPORTED_ELSEWHERE:
            continue
        where = min(names)
        if isinstance(rx.pattern, str) and not rx.flags & re.ASCII and re.search(r"\\[dwsbDWSB]", rx.pattern):
            bad.append(f"{where}: {rx.pattern!r} uses a Unicode class without re.ASCII")
        if isinstance(rx.pattern, str) and rx.pattern.endswith("$") and not rx.pattern.endswith("\\$"):
            bad.append(f"{where}: {rx.pattern!r} ends with $ (a trailing newline passes .match); use fullmatch")
        if rx.flags & re.IGNORECASE and not rx.flags & re.ASCII:
            bad.append(f"{where}: {rx.pattern!r} is IGNORECASE without re.ASCII (the Kelvin sign matches k)")
    assert bad == [], "\n".join(bad)


def test_a_bad_request_id_is_told_what_a_request_id_may_hold() -> None:
    # Since request ids may name a home (`<id>@<node>`), the refusal says so rather than quoting the regex.
    for bad in ("job@bad_name", "job@@n1", "jöb", "job 1"):
        with pytest.raises(ValidationError) as info:
            SpawnRequest.model_validate({"spec": {"command": "true"}, "request_id": bad})
        assert "is not a request id" in str(info.value) and "@NODE" in str(info.value)
    assert SpawnRequest.model_validate({"spec": {"command": "true"}, "request_id": "job-1@node-a.1"}).request_id
