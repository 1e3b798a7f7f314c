"""docker-compose.yml and deploy/docker/Dockerfile, checked without a Docker engine.

The file is validated against the Compose Specification schema (the copy check-jsonschema
vendors), then against what operators rely on: health checks and start order, no secrets in
the file, ports on loopback only, declared volumes, existing mounts and build targets, a
non-root runtime, and ``TOUCHPULSE_*`` variables that are real settings (an unknown one stops
a process at start, so a typo here would be a stack that never comes up).
"""

from __future__ import annotations

import copy
import json
import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from importlib.resources import files
from pathlib import Path
from typing import Any

# No types-jsonschema in the lock (and the lock is not ours to change): untyped import.
import jsonschema  # type: ignore[import-untyped]
import pytest
import typer.main
import yaml

from touchpulse_shared.cli import app as cli_app
from touchpulse_shared.settings import CONFIG_FILE_ENV, ENV_PREFIX, Settings, env_name
from touchpulse_shared.stack.services import SERVICES

ROOT = Path(__file__).resolve().parents[2]
COMPOSE_FILE = ROOT / "docker-compose.yml"
DOCKERFILE = ROOT / "deploy" / "docker" / "Dockerfile"

#: Run to completion; what depends on them waits for ``service_completed_successfully``.
ONE_SHOT = frozenset({"migrate"})
#: A demo load generator: it serves nothing to probe and nothing waits for it.
CLIENTS = frozenset({"simulator"})
#: Services whose data outlives their containers.
STATEFUL = frozenset({"kafka", "postgres", "prometheus", "grafana"})

SECRET_WORDS = ("PASSWORD", "SECRET", "KEY")
INTERPOLATION = re.compile(
    r"\$\{(?P<name>[A-Za-z_][A-Za-z0-9_]*)(?:(?P<op>:?[-?+])(?P<arg>[^}]*))?\}"
)
URL_PASSWORD = re.compile(r"://[^/:@\s]+:(?P<password>[^@\s]*)@")


# --- loading ---------------------------------------------------------------------------------


def load_compose() -> dict[str, Any]:
    document = yaml.safe_load(COMPOSE_FILE.read_text(encoding="utf-8"))
    assert isinstance(document, dict)
    return document


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    return load_compose()


@pytest.fixture(scope="module")
def services(compose: dict[str, Any]) -> dict[str, dict[str, Any]]:
    result: dict[str, dict[str, Any]] = compose["services"]
    return result


def long_running(services: Mapping[str, Any]) -> list[str]:
    return sorted(set(services) - ONE_SHOT - CLIENTS)


def environment(service: Mapping[str, Any]) -> dict[str, str]:
    """A service's environment as a mapping, whichever of the two syntaxes it uses."""
    env = service.get("environment") or {}
    if isinstance(env, list):
        pairs = (item.partition("=") for item in env)
        return {key: value for key, _, value in pairs}
    return {key: "" if value is None else str(value) for key, value in env.items()}


def resolve(value: str) -> str:
    """``value`` as compose would interpolate it with nothing set: defaults for ``:-``, and a
    32-character stand-in where compose would insist on a value (``:?``)."""

    def one(match: re.Match[str]) -> str:
        op, arg = match["op"] or "", match["arg"] or ""
        if op in ("-", ":-"):
            return arg
        if op in ("?", ":?"):
            return "x" * 32
        return ""

    return INTERPOLATION.sub(one, value)


# --- the Compose Specification ---------------------------------------------------------------


def compose_schema() -> dict[str, Any]:
    resource = files("check_jsonschema") / "builtin_schemas/vendor/compose-spec.json"
    schema: dict[str, Any] = json.loads(resource.read_text(encoding="utf-8"))
    return schema


def schema_errors(document: Any) -> list[str]:
    schema = compose_schema()
    # The draft the schema declares in $schema (2020-12 today), not a guess.
    validator_class = jsonschema.validators.validator_for(schema)
    assert validator_class.META_SCHEMA["$id"].rstrip("#") == schema["$schema"].rstrip("#")
    validator_class.check_schema(schema)
    # No format checker: compose durations ("10s") are not the ISO 8601 "duration" format.
    validator = validator_class(schema)
    return sorted(
        f"{'/'.join(map(str, error.absolute_path)) or '<root>'}: {error.message}"
        for error in validator.iter_errors(document)
    )


def test_the_compose_file_is_valid_against_the_compose_specification(
    compose: dict[str, Any],
) -> None:
    assert schema_errors(compose) == []


def _bad_condition(document: dict[str, Any]) -> None:
    document["services"]["ingest"]["depends_on"]["kafka"]["condition"] = "service_ready"


def _unknown_top_level_key(document: dict[str, Any]) -> None:
    document["servics"] = {}


def _misspelt_service_key(document: dict[str, Any]) -> None:
    document["services"]["api"]["healthchek"] = document["services"]["api"].pop("healthcheck")


def _misspelt_health_check_key(document: dict[str, Any]) -> None:
    document["services"]["scoring"]["healthcheck"]["intervall"] = "10s"


@pytest.mark.parametrize(
    "breakage",
    [_bad_condition, _unknown_top_level_key, _misspelt_service_key, _misspelt_health_check_key],
)
def test_the_validator_rejects_a_broken_copy(compose: dict[str, Any], breakage: Any) -> None:
    broken = copy.deepcopy(compose)
    breakage(broken)
    assert schema_errors(broken), f"{breakage.__name__} passed the schema"


# --- start order and health ------------------------------------------------------------------


def test_the_service_kinds_are_known(services: dict[str, dict[str, Any]]) -> None:
    # A new service must be classified here (and so get a health check or a reason not to).
    assert set(services) >= ONE_SHOT | CLIENTS
    for name in ONE_SHOT:
        assert services[name].get("restart") == "no", f"{name} is one-shot: no restarts"


def test_every_long_running_service_is_restarted_when_it_exits(
    services: dict[str, dict[str, Any]],
) -> None:
    """A crashed process comes back by itself (as under `touchpulse run`); `unless-stopped`
    rather than `always`, so an operator's `docker compose stop` holds."""
    for name in long_running(services):
        assert services[name].get("restart") == "unless-stopped", f"{name} is not restarted"
    for name in CLIENTS:
        # A client that fails every time (a revoked key) gives up after a few tries.
        policy = str(services[name].get("restart"))
        assert re.fullmatch(r"on-failure:\d+", policy), f"{name}: {policy}"


def test_every_long_running_service_has_a_health_check(
    services: dict[str, dict[str, Any]],
) -> None:
    for name in long_running(services):
        check = services[name].get("healthcheck")
        assert check, f"{name} has no healthcheck"
        assert not check.get("disable"), f"{name} disables its healthcheck"
        assert check.get("test") not in (None, ["NONE"], "NONE"), f"{name}: no test"
        assert check.get("interval"), f"{name}: no interval"
        assert check.get("retries"), f"{name}: no retries"


def test_the_python_services_are_probed_on_readyz_at_their_own_port(
    services: dict[str, dict[str, Any]],
) -> None:
    for spec in SERVICES:
        service = services[spec.name]
        env = environment(service)
        port = int(
            resolve(env.get(env_name(spec.port_setting), ""))
            or Settings.model_fields[spec.port_setting].default
        )
        test = service["healthcheck"]["test"]
        assert test[0] == "CMD", f"{spec.name}: exec form, the image has no curl"
        assert test[1] == "python", f"{spec.name}: probed with the image's python"
        assert f"127.0.0.1:{port}/readyz" in " ".join(test), f"{spec.name}: /readyz on {port}"


def test_dependencies_wait_for_health_or_completion(services: dict[str, dict[str, Any]]) -> None:
    for name, service in services.items():
        depends_on = service.get("depends_on", {})
        # The short (list) form means service_started: too early for anything here.
        assert isinstance(depends_on, dict), f"{name}: depends_on needs conditions"
        for dependency, spec in depends_on.items():
            assert dependency in services, f"{name} depends on unknown {dependency}"
            expected = (
                "service_completed_successfully" if dependency in ONE_SHOT else "service_healthy"
            )
            assert spec.get("condition") == expected, f"{name} -> {dependency}"
            assert dependency not in CLIENTS, f"{name} must not wait for {dependency}"


def test_the_services_wait_for_migrate(services: dict[str, dict[str, Any]]) -> None:
    for spec in SERVICES:
        condition = services[spec.name]["depends_on"]["migrate"]["condition"]
        assert condition == "service_completed_successfully"


def test_scoring_runs_two_scalable_replicas(services: dict[str, dict[str, Any]]) -> None:
    scoring = services["scoring"]
    assert scoring["deploy"]["replicas"] == 2
    for name, service in services.items():
        if service.get("deploy", {}).get("replicas", 1) > 1:
            assert "container_name" not in service, f"{name}: a fixed name cannot scale"
            assert not service.get("ports"), f"{name}: a fixed host port cannot scale"


def test_the_simulator_is_behind_the_demo_profile(services: dict[str, dict[str, Any]]) -> None:
    assert services["simulator"]["profiles"] == ["demo"]
    for name, service in services.items():
        if not service.get("profiles"):
            for dependency in service.get("depends_on", {}):
                assert not services[dependency].get("profiles"), f"{name} -> {dependency}"


# --- commands --------------------------------------------------------------------------------


def cli_commands() -> dict[str, Any]:
    group = typer.main.get_command(cli_app)
    commands: dict[str, Any] = getattr(group, "commands", {})
    return commands


def test_migrate_runs_existing_cli_commands(services: dict[str, dict[str, Any]]) -> None:
    migrate = services["migrate"]
    script = " ".join([*migrate.get("entrypoint", []), *migrate.get("command", [])])
    used = re.findall(r"\btouchpulse\s+([a-z-]+)", script)
    assert used == ["migrate", "topics"]
    assert set(used) <= set(cli_commands())


def test_the_simulator_runs_the_simulate_command_with_its_options(
    services: dict[str, dict[str, Any]],
) -> None:
    command = services["simulator"]["command"]
    assert services["simulator"]["build"]["target"] == "tools"  # entrypoint: touchpulse
    assert command[0] == "simulate"
    simulate = cli_commands().get(command[0])
    assert simulate is not None, "touchpulse has no simulate command"
    known = {opt for param in simulate.params for opt in param.opts}
    used = {arg for arg in command[1:] if arg.startswith("--")}
    assert used <= known, f"unknown options: {sorted(used - known)}"
    ingest_port = Settings.model_fields["ingest_port"].default
    assert command[command.index("--ingest-url") + 1] == f"http://ingest:{ingest_port}"


# --- secrets, ports, volumes -----------------------------------------------------------------


def test_no_secret_is_written_in_the_file(compose: dict[str, Any]) -> None:
    for name, service in compose["services"].items():
        for key, value in environment(service).items():
            if any(word in key.upper() for word in SECRET_WORDS):
                assert INTERPOLATION.fullmatch(value), f"{name}: {key} must come from ${{...}}"
            url = URL_PASSWORD.search(value)
            if url is not None:
                password = url["password"]
                assert INTERPOLATION.fullmatch(password), f"{name}: {key} holds a password"


def test_required_secrets_say_how_to_set_them(compose: dict[str, Any]) -> None:
    text = COMPOSE_FILE.read_text(encoding="utf-8")
    for match in INTERPOLATION.finditer(text):
        if match["op"] in ("?", ":?"):
            assert match["arg"].strip(), f"${{{match['name']}}}: say how to set it"


def test_every_host_port_binds_loopback_only(services: dict[str, dict[str, Any]]) -> None:
    for name, service in services.items():
        for port in service.get("ports", []):
            if isinstance(port, dict):
                assert port.get("host_ip") == "127.0.0.1", f"{name}: {port}"
            else:
                assert str(port).startswith("127.0.0.1:"), f"{name}: {port}"


@dataclass(frozen=True)
class Mount:
    service: str
    source: str
    target: str
    read_only: bool

    @property
    def bind(self) -> bool:
        return self.source.startswith((".", "/", "~", "$"))


def mounts(services: Mapping[str, Mapping[str, Any]]) -> Iterator[Mount]:
    for name, service in services.items():
        for volume in service.get("volumes", []):
            if isinstance(volume, dict):
                yield Mount(
                    name,
                    str(volume.get("source", "")),
                    str(volume["target"]),
                    bool(volume.get("read_only")),
                )
            else:
                source, _, rest = str(volume).partition(":")
                target, _, mode = rest.partition(":")
                yield Mount(name, source, target, "ro" in mode.split(","))


def test_every_named_volume_is_declared_and_used(compose: dict[str, Any]) -> None:
    declared = set(compose.get("volumes") or {})
    used = {m.source for m in mounts(compose["services"]) if not m.bind and m.source}
    assert used <= declared, f"undeclared: {sorted(used - declared)}"
    assert declared <= used, f"declared but unused: {sorted(declared - used)}"


def test_stateful_services_keep_their_data_in_named_volumes(
    services: dict[str, dict[str, Any]],
) -> None:
    for name in STATEFUL:
        named = [m for m in mounts({name: services[name]}) if not m.bind]
        assert named, f"{name} keeps its data in the container"


def test_every_bind_mount_exists_and_is_read_only(services: dict[str, dict[str, Any]]) -> None:
    for mount in mounts(services):
        if mount.bind:
            assert mount.source.startswith("./"), (
                f"{mount.service}: {mount.source} is not in the repo"
            )
            assert (ROOT / mount.source).exists(), f"{mount.service}: {mount.source} is missing"
            assert mount.read_only, f"{mount.service}: {mount.source} should be mounted :ro"


def test_the_promise_catalogue_is_mounted_where_the_setting_points(
    services: dict[str, dict[str, Any]],
) -> None:
    for name in ("ingest", "scoring", "api"):
        catalogue = environment(services[name])[env_name("promise_catalogue")]
        sources = {m.target: m.source for m in mounts({name: services[name]})}
        assert sources.get(catalogue) == "./deploy/promises.yaml", name


# --- settings --------------------------------------------------------------------------------

KNOWN_VARIABLES = {env_name(name) for name in Settings.model_fields} | {CONFIG_FILE_ENV}


def unknown_settings(env: Mapping[str, str]) -> list[str]:
    return sorted(k for k in env if k.startswith(ENV_PREFIX) and k not in KNOWN_VARIABLES)


def test_a_mistyped_setting_is_caught() -> None:
    assert unknown_settings({"TOUCHPULSE_DATABSE_URL": "x", "TOUCHPULSE_API_PORT": "1"}) == [
        "TOUCHPULSE_DATABSE_URL"
    ]


def test_every_touchpulse_variable_is_a_setting_with_a_valid_value(
    services: dict[str, dict[str, Any]],
) -> None:
    by_variable = {env_name(name): name for name in Settings.model_fields}
    for name, service in services.items():
        env = environment(service)
        assert unknown_settings(env) == [], name
        values = {
            by_variable[key]: resolve(value)
            for key, value in env.items()
            if key.startswith(ENV_PREFIX)
        }
        # Validation only: model_validate does not read this process's environment.
        Settings.model_validate(values)


# --- the Dockerfile --------------------------------------------------------------------------


@dataclass
class Stage:
    name: str
    base: str
    instructions: list[tuple[str, str]] = field(default_factory=list)


def dockerfile_stages() -> dict[str, Stage]:
    text = DOCKERFILE.read_text(encoding="utf-8")
    # Continuation lines joined; comments dropped.
    lines = [line for line in text.splitlines() if not line.lstrip().startswith("#")]
    logical = re.sub(r"\\\n", " ", "\n".join(lines))
    stages: dict[str, Stage] = {}
    current: Stage | None = None
    for line in logical.splitlines():
        words = line.split(maxsplit=1)
        if not words:
            continue
        instruction, argument = words[0].upper(), (words[1] if len(words) > 1 else "")
        if instruction == "FROM":
            parts = [p for p in argument.split() if not p.startswith("--")]
            alias = parts[2] if len(parts) >= 3 and parts[1].upper() == "AS" else str(len(stages))
            current = stages[alias] = Stage(alias, parts[0])
        elif current is not None:
            current.instructions.append((instruction, argument.strip()))
    return stages


def effective(stages: Mapping[str, Stage], name: str, instruction: str) -> str | None:
    """The last ``instruction`` in force in stage ``name``, inherited through FROM <stage>."""
    stage: Stage | None = stages[name]
    while stage is not None:
        found = [arg for instr, arg in stage.instructions if instr == instruction]
        if found:
            return found[-1]
        stage = stages.get(stage.base)
    return None


def test_every_build_target_is_a_dockerfile_stage(services: dict[str, dict[str, Any]]) -> None:
    stages = dockerfile_stages()
    targets = set()
    for name, service in services.items():
        build = service.get("build")
        if build is None:
            continue
        assert isinstance(build, dict), f"{name}: build needs a target"
        assert build["context"] == "."
        assert (ROOT / build["dockerfile"]).resolve() == DOCKERFILE
        assert build["target"] in stages, f"{name}: no stage {build['target']!r}"
        targets.add(build["target"])
    assert targets == {"ingest", "scoring", "api", "tools"}


def test_the_images_run_as_a_non_root_user() -> None:
    stages = dockerfile_stages()
    for target in ("ingest", "scoring", "api", "tools"):
        user = effective(stages, target, "USER")
        assert user is not None, f"{target} runs as root"
        name, _, group = user.partition(":")
        assert name not in ("root", "0"), f"{target}: {user}"
        assert group not in ("root", "0"), f"{target}: {user}"


def test_the_service_images_start_their_service_on_their_port() -> None:
    stages = dockerfile_stages()
    for spec in SERVICES:
        command = json.loads(effective(stages, spec.name, "CMD") or "[]")
        assert command == ["python", "-m", spec.module], spec.name
        port = Settings.model_fields[spec.port_setting].default
        assert effective(stages, spec.name, "EXPOSE") == str(port), spec.name
    assert json.loads(effective(stages, "tools", "ENTRYPOINT") or "[]") == ["touchpulse"]


def test_the_runtime_is_slim_and_quiet() -> None:
    stages = dockerfile_stages()
    runtime_env = " ".join(arg for instr, arg in stages["runtime"].instructions if instr == "ENV")
    assert "PYTHONDONTWRITEBYTECODE=1" in runtime_env
    assert "PYTHONUNBUFFERED=1" in runtime_env
    # Build tools stay in the builder: the runtime only copies the finished venv.
    runs = [arg for instr, arg in stages["runtime"].instructions if instr == "RUN"]
    assert not any(re.search(r"\b(apt-get|pip|gcc|make)\b", run) for run in runs), runs
    assert not any(instr == "HEALTHCHECK" for s in stages.values() for instr, _ in s.instructions)
    builder_runs = " ".join(arg for instr, arg in stages["builder"].instructions if instr == "RUN")
    assert "--require-hashes" in builder_runs
    assert "--no-build-isolation" in builder_runs
