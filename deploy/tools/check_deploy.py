"""Check redraft's deployment files beyond what their schemas express.

Run by .ci/validate-deploy.sh inside its virtual environment. Subcommands:

  dockerfile FILE         parse with BuildKit's parser, then check the
                          instructions, stages and image targets
  compose FILE            check the cross-references of a compose file
  k8s [options] FILE...   validate Kubernetes manifests against the JSON
                          schemas bundled in kubernetes-validate and, with
                          --rendered, check the cross-references of one
                          kustomize build output

Each problem is printed on its own line. The exit status is 1 if there was
any, 0 otherwise.
"""

import argparse
import re
import sys
from pathlib import Path

import dockerfile
import kubernetes_validate
import yaml
from kubernetes_validate.utils import VersionNotSupportedError

# The image targets, which are also the actor names, and each one's gRPC port.
ACTOR_PORTS = {"generator": 50051, "critic": 50052, "orchestrator": 50050}
METRICS_PORT = 9090
# Orchestrator environment variables that list replica addresses, and the
# actor that each address must reach.
ADDRESS_VARIABLES = {"REDRAFT_GENERATORS": "generator", "REDRAFT_CRITICS": "critic"}
ADDRESS_PATTERN = re.compile(r"^(?:http://|dns:///)([a-z0-9.-]+):(\d+)$")
NAMESPACE = "redraft"
WORKLOAD_KINDS = {"Deployment", "StatefulSet"}
COMPONENT_LABEL = "app.kubernetes.io/component"

# Every instruction of the Dockerfile reference. The parser accepts any word
# as an instruction, so an unknown one is reported here.
DOCKERFILE_INSTRUCTIONS = {
    "ADD", "ARG", "CMD", "COPY", "ENTRYPOINT", "ENV", "EXPOSE", "FROM", "HEALTHCHECK",
    "LABEL", "MAINTAINER", "ONBUILD", "RUN", "SHELL", "STOPSIGNAL", "USER", "VOLUME",
    "WORKDIR",
}  # fmt: skip

# A Kubernetes resource quantity such as 250m, 2, 1.5 or 8Gi. The JSON
# schemas accept any string there, so "8GiB" would pass them.
QUANTITY_PATTERN = re.compile(r"^[0-9]+(\.[0-9]+)?(m|k|M|G|T|P|E|Ki|Mi|Gi|Ti|Pi|Ei|e[0-9]+)?$")
# The metric target types of autoscaling/v2, which the schemas leave open.
METRIC_TARGET_TYPES = {"Utilization", "AverageValue", "Value"}


class Problems:
    """Problems found so far, printed as they are added."""

    def __init__(self):
        self.count = 0

    def add(self, where, message):
        self.count += 1
        print(f"{where}: {message}")


# --- Dockerfile ---------------------------------------------------------------


def split_stages(instructions):
    """Split parsed Dockerfile instructions into the global ones and the stages.

    Returns (global_instructions, stages). stages maps each stage's name (or
    its index, for an unnamed stage) to {"base", "instructions", "line"}.
    """
    global_instructions = []
    stages = {}
    current = None
    for instruction in instructions:
        if instruction.cmd.upper() == "FROM":
            words = instruction.value
            named = len(words) == 3 and words[1].upper() == "AS"
            current = {
                "base": words[0] if words else "",
                "instructions": [],
                "line": instruction.start_line,
            }
            stages[words[2] if named else len(stages)] = current
        elif current is None:
            global_instructions.append(instruction)
        else:
            current["instructions"].append(instruction)
    return global_instructions, stages


def parse_stages(path):
    """Parse a Dockerfile and return its stages as split_stages does."""
    return split_stages(dockerfile.parse_file(str(path)))[1]


def stage_chain(stages, name):
    """Return the instructions of a stage and of the stages it is built FROM, base first."""
    chain = []
    while name in stages:
        chain.insert(0, stages[name])
        name = stages[name]["base"]
    return [instruction for stage in chain for instruction in stage["instructions"]]


def instructions_named(chain, command):
    return [instruction for instruction in chain if instruction.cmd.upper() == command]


def image_env(stages, target):
    """Return the ENV values that an image target ends up with."""
    env = {}
    for instruction in instructions_named(stage_chain(stages, target), "ENV"):
        values = instruction.value
        env.update(zip(values[0::2], values[1::2], strict=True))
    return env


def check_dockerfile(path, problems):
    try:
        instructions = dockerfile.parse_file(str(path))
    except dockerfile.GoParseError as error:
        problems.add(path, f"parse failed: {error}")
        return
    global_instructions, stages = split_stages(instructions)
    check_instructions(path, instructions, problems)
    check_stage_references(path, global_instructions, stages, problems)
    for target, port in ACTOR_PORTS.items():
        if target in stages:
            check_image_target(path, stages, target, port, problems)
        else:
            problems.add(path, f"target {target!r} is missing")


def check_instructions(path, instructions, problems):
    for instruction in instructions:
        where = f"{path}:{instruction.start_line}"
        command = instruction.cmd.upper()
        if command not in DOCKERFILE_INSTRUCTIONS:
            problems.add(where, f"unknown instruction {instruction.cmd!r}")
        elif not any(instruction.value):
            problems.add(where, f"{command} has no arguments")
        elif command == "FROM" and not (
            len(instruction.value) == 3 and instruction.value[1].upper() == "AS"
        ):
            problems.add(where, "FROM must read `FROM IMAGE AS NAME`")


def check_stage_references(path, global_instructions, stages, problems):
    """Check that FROM uses only global ARGs and COPY --from only earlier stages."""
    global_args = {
        instruction.value[0].split("=", 1)[0]
        for instruction in instructions_named(global_instructions, "ARG")
    }
    earlier = []
    for name, stage in stages.items():
        for variable in re.findall(r"\$\{?(\w+)", stage["base"]):
            if variable not in global_args:
                problems.add(
                    f"{path}:{stage['line']}", f"FROM uses ${variable}, which is not a global ARG"
                )
        for instruction in stage["instructions"]:
            for flag in instruction.flags:
                source = flag.removeprefix("--from=")
                if flag.startswith("--from=") and source not in earlier:
                    problems.add(
                        f"{path}:{instruction.start_line}",
                        f"COPY --from={source} names no earlier stage",
                    )
        earlier.append(name)


def check_image_target(path, stages, target, port, problems):
    where = f"{path}: target {target}"
    chain = stage_chain(stages, target)

    users = [instruction.value[0] for instruction in instructions_named(chain, "USER")]
    if not users or not re.fullmatch(r"[1-9]\d*(:\d+)?", users[-1]):
        problems.add(where, f"the last USER must be a numeric non-root uid, found {users[-1:]}")

    binary = f"/usr/local/bin/redraft-{target}"
    copied = {instruction.value[-1] for instruction in instructions_named(chain, "COPY")}
    if binary not in copied:
        problems.add(where, f"no COPY writes {binary}")
    entrypoints = instructions_named(chain, "ENTRYPOINT")
    if not entrypoints or list(entrypoints[-1].value) != [binary]:
        problems.add(where, f'ENTRYPOINT must be ["{binary}"]')
    elif not entrypoints[-1].json:
        problems.add(where, "ENTRYPOINT must use the exec (JSON) form, to receive SIGTERM")

    exposed = {
        int(word.split("/")[0])
        for instruction in instructions_named(chain, "EXPOSE")
        for word in instruction.value
    }
    for expected in (port, METRICS_PORT):
        if expected not in exposed:
            problems.add(where, f"port {expected} is not EXPOSEd")

    env = image_env(stages, target)
    expected_env = {
        f"REDRAFT_{target.upper()}_LISTEN": f"0.0.0.0:{port}",
        "METRICS_ADDR": f"0.0.0.0:{METRICS_PORT}",
        "LOG_FORMAT": "json",
    }
    for variable, expected in expected_env.items():
        if env.get(variable) != expected:
            problems.add(where, f"ENV {variable} is {env.get(variable)!r}, expected {expected!r}")
    if target != "orchestrator":
        model = env.get(f"REDRAFT_{target.upper()}_MODEL", "")
        if not model.startswith("/models/"):
            problems.add(
                where, f"ENV REDRAFT_{target.upper()}_MODEL is {model!r}, not under /models"
            )


# --- compose ------------------------------------------------------------------


def service_environment(service):
    """Return a compose service's environment as a dict, from either of its two forms."""
    environment = service.get("environment") or {}
    if isinstance(environment, list):
        environment = dict(item.split("=", 1) for item in environment if "=" in item)
    return environment


def check_compose(path, problems):
    path = Path(path)
    services = yaml.safe_load(path.read_text()).get("services") or {}
    # The Dockerfile stages behind each service that is built.
    service_stages = {}

    for name, service in services.items():
        where = f"{path}: service {name}"
        build = service.get("build")
        if isinstance(build, dict):
            dockerfile_path = (path.parent / build.get("context", ".")).resolve() / build.get(
                "dockerfile", "Dockerfile"
            )
            if not dockerfile_path.is_file():
                problems.add(where, f"Dockerfile {dockerfile_path} not found")
                continue
            service_stages[name] = parse_stages(dockerfile_path)
            if build.get("target") not in service_stages[name]:
                problems.add(
                    where,
                    f"build target {build.get('target')!r} is not a stage of {dockerfile_path}",
                )

        for dependency in service.get("depends_on") or {}:
            if dependency not in services:
                problems.add(where, f"depends_on names unknown service {dependency!r}")

        for port in service.get("ports") or []:
            host_ip = port.get("host_ip") if isinstance(port, dict) else str(port).split(":")[0]
            if host_ip != "127.0.0.1":
                problems.add(where, f"published port {port!r} is not bound to 127.0.0.1")

    for name, service in services.items():
        environment = service_environment(service)
        for variable, actor in ADDRESS_VARIABLES.items():
            for address in str(environment.get(variable, "")).split(","):
                if address:
                    where = f"{path}: service {name}: {variable}"
                    check_compose_address(where, address, actor, services, service_stages, problems)


def check_compose_address(where, address, actor, services, service_stages, problems):
    """Check that an address names a compose service of the actor, on the port it listens on."""
    match = ADDRESS_PATTERN.match(address)
    if not match:
        problems.add(where, f"address {address!r} is not http://HOST:PORT")
        return
    host, port = match.group(1), int(match.group(2))
    if host not in services:
        problems.add(where, f"address {address!r} names no service")
        return
    target = (services[host].get("build") or {}).get("target")
    if target != actor:
        problems.add(where, f"address {address!r} reaches a {target} image, not a {actor}")
        return

    variable = f"REDRAFT_{actor.upper()}_LISTEN"
    listen = service_environment(services[host]).get(variable)
    if listen is None:
        listen = image_env(service_stages.get(host, {}), target).get(variable, "")
    if not listen.endswith(f":{port}"):
        problems.add(
            where, f"address {address!r} uses port {port}, but {host} listens on {listen!r}"
        )


# --- Kubernetes ---------------------------------------------------------------


def load_resources(path, problems):
    """Return every non-empty YAML document of a file, or [] if it does not parse."""
    try:
        documents = list(yaml.safe_load_all(Path(path).read_text()))
    except yaml.YAMLError as error:
        problems.add(path, f"invalid YAML: {error}")
        return []
    resources = []
    for document in documents:
        if document is None:
            continue
        if not isinstance(document, dict) or "kind" not in document or "apiVersion" not in document:
            problems.add(path, "a document is not a Kubernetes resource (no kind or apiVersion)")
            continue
        resources.append(document)
    if not resources:
        problems.add(path, "contains no resources")
    return resources


def resource_name(resource):
    return f"{resource['kind']}/{resource.get('metadata', {}).get('name', '?')}"


def validate_schemas(path, resources, versions, problems):
    """Validate each resource strictly (unknown fields rejected) for each Kubernetes version.

    kubernetes-validate stops at the first error of a resource, so a fixed
    resource can still show the next one.
    """
    for resource in resources:
        for version in versions:
            where = f"{path}: {resource_name(resource)} (Kubernetes {version})"
            try:
                kubernetes_validate.validate(resource, version, strict=True)
            except kubernetes_validate.ValidationError as error:
                location = ".".join(str(part) for part in error.path) or "(root)"
                problems.add(where, f"{location}: {error.message}")
            except (kubernetes_validate.SchemaNotFoundError, VersionNotSupportedError) as error:
                problems.add(where, error.message)


def selector_matches(selector, labels):
    return bool(selector) and all(labels.get(key) == value for key, value in selector.items())


def pod_labels(workload):
    return workload["spec"]["template"]["metadata"].get("labels", {})


def pod_containers(workload):
    return workload["spec"]["template"]["spec"].get("containers", [])


def check_rendered(path, resources, expect_gpu, problems):
    """Check that the resources of one kustomize build refer to each other correctly."""
    by_kind = {}
    for resource in resources:
        by_kind.setdefault(resource["kind"], {})[resource["metadata"]["name"]] = resource
    workloads = [resource for resource in resources if resource["kind"] in WORKLOAD_KINDS]
    services = by_kind.get("Service", {})

    for resource in resources:
        namespace = resource["metadata"].get("namespace")
        if resource["kind"] != "Namespace" and namespace != NAMESPACE:
            problems.add(
                f"{path}: {resource_name(resource)}",
                f"namespace is {namespace!r}, expected {NAMESPACE!r}",
            )
    check_services(path, services, workloads, problems)
    check_disruption_budgets(path, by_kind.get("PodDisruptionBudget", {}), workloads, problems)
    check_autoscalers(path, by_kind, problems)
    for workload in workloads:
        where = f"{path}: {resource_name(workload)}"
        check_workload(where, workload, services, problems)
        for container in pod_containers(workload):
            container_where = f"{where}: container {container['name']}"
            check_container(container_where, container, expect_gpu, problems)
            check_replica_addresses(container_where, container, services, problems)


def check_services(path, services, workloads, problems):
    for name, service in services.items():
        where = f"{path}: Service/{name}"
        selector = service["spec"].get("selector", {})
        matched = [w for w in workloads if selector_matches(selector, pod_labels(w))]
        if not matched:
            problems.add(where, "selector matches no pod template")
        for port in service["spec"].get("ports", []):
            target = port.get("targetPort", port["port"])
            for workload in matched:
                container_ports = [p for c in pod_containers(workload) for p in c.get("ports", [])]
                if not any(target in (p.get("name"), p["containerPort"]) for p in container_ports):
                    problems.add(
                        where, f"targetPort {target!r} is not a port of {resource_name(workload)}"
                    )


def check_disruption_budgets(path, budgets, workloads, problems):
    for name, budget in budgets.items():
        selector = budget["spec"]["selector"].get("matchLabels", {})
        if not any(selector_matches(selector, pod_labels(w)) for w in workloads):
            problems.add(f"{path}: PodDisruptionBudget/{name}", "selector matches no pod template")


def check_autoscalers(path, by_kind, problems):
    for name, autoscaler in by_kind.get("HorizontalPodAutoscaler", {}).items():
        where = f"{path}: HorizontalPodAutoscaler/{name}"
        reference = autoscaler["spec"]["scaleTargetRef"]
        target = by_kind.get(reference["kind"], {}).get(reference["name"])
        if target is None:
            problems.add(
                where, f"scaleTargetRef {reference['kind']}/{reference['name']} does not exist"
            )
        elif "replicas" in target["spec"]:
            problems.add(
                where, f"{resource_name(target)} sets replicas, which every apply would reset"
            )
        for metric in autoscaler["spec"].get("metrics", []):
            # A metric's fields sit under its type in lower camel case: type
            # Resource has `resource`, ContainerResource `containerResource`.
            source_field = metric["type"][:1].lower() + metric["type"][1:]
            target_type = (metric.get(source_field) or {}).get("target", {}).get("type")
            if target_type not in METRIC_TARGET_TYPES:
                problems.add(
                    where,
                    f"metric target type {target_type!r} is not one of "
                    f"{sorted(METRIC_TARGET_TYPES)}",
                )


def check_workload(where, workload, services, problems):
    spec = workload["spec"]
    if not selector_matches(spec["selector"].get("matchLabels", {}), pod_labels(workload)):
        problems.add(where, "selector does not match the pod template's labels")
    if workload["kind"] == "StatefulSet":
        governing = services.get(spec.get("serviceName"))
        if governing is None or governing["spec"].get("clusterIP") != "None":
            problems.add(
                where, f"serviceName {spec.get('serviceName')!r} is not a headless Service"
            )
    for claim in spec.get("volumeClaimTemplates", []):
        storage = claim["spec"].get("resources", {}).get("requests", {}).get("storage")
        if not QUANTITY_PATTERN.match(str(storage)):
            problems.add(
                where,
                f"volume claim {claim['metadata']['name']} requests storage {storage!r}, "
                "which is not a quantity",
            )

    pod = spec["template"]["spec"]
    if not (pod.get("securityContext") or {}).get("runAsNonRoot"):
        problems.add(where, "the pod does not set runAsNonRoot")
    annotations = spec["template"]["metadata"].get("annotations") or {}
    if annotations.get("prometheus.io/port") != str(METRICS_PORT):
        problems.add(where, f'prometheus.io/port annotation is not "{METRICS_PORT}"')


def check_container(where, container, expect_gpu, problems):
    """Check a container's security context, resources and probes."""
    if not (container.get("securityContext") or {}).get("readOnlyRootFilesystem"):
        problems.add(where, "readOnlyRootFilesystem is not set")

    resources = container.get("resources") or {}
    for section in ("requests", "limits"):
        amounts = resources.get(section) or {}
        for resource in ("cpu", "memory"):
            if resource not in amounts:
                problems.add(where, f"resources.{section}.{resource} is not set")
        for resource, amount in amounts.items():
            if not QUANTITY_PATTERN.match(str(amount)):
                problems.add(where, f"resources.{section}.{resource} {amount!r} is not a quantity")
    has_gpu = "nvidia.com/gpu" in (resources.get("limits") or {})
    wants_gpu = expect_gpu and container["name"] == "generator"
    if has_gpu != wants_gpu:
        problems.add(
            where,
            f"nvidia.com/gpu limit is {'set' if has_gpu else 'missing'}; "
            "only the generator of the gpu overlay has one",
        )

    port_numbers = {port["containerPort"] for port in container.get("ports", [])}
    port_names = {port.get("name"): port["containerPort"] for port in container.get("ports", [])}
    for probe_name in ("startupProbe", "livenessProbe", "readinessProbe"):
        probe = container.get(probe_name)
        if probe is None:
            problems.add(where, f"{probe_name} is missing")
            continue
        port = (probe.get("grpc") or probe.get("tcpSocket") or {}).get("port")
        if port_names.get(port, port) not in port_numbers:
            problems.add(where, f"{probe_name} checks port {port!r}, which the container lacks")


def check_replica_addresses(where, container, services, problems):
    """Check that REDRAFT_GENERATORS and REDRAFT_CRITICS name Services of the right actor."""
    environment = {variable["name"]: variable.get("value") for variable in container.get("env", [])}
    for variable, actor in ADDRESS_VARIABLES.items():
        for address in (environment.get(variable) or "").split(","):
            if not address:
                continue
            match = ADDRESS_PATTERN.match(address)
            service = services.get(match.group(1)) if match else None
            if not match:
                problems.add(where, f"{variable} address {address!r} is neither http://HOST:PORT nor dns:///HOST:PORT")
            elif service is None:
                problems.add(where, f"{variable} address {address!r} names no Service")
            elif int(match.group(2)) not in {p["port"] for p in service["spec"].get("ports", [])}:
                problems.add(
                    where, f"{variable} address {address!r} uses a port its Service does not have"
                )
            elif service["spec"].get("selector", {}).get(COMPONENT_LABEL) != actor:
                problems.add(where, f"{variable} address {address!r} does not select {actor} pods")


# --- command line -------------------------------------------------------------


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(dest="command", required=True)
    commands.add_parser("dockerfile").add_argument("file")
    commands.add_parser("compose").add_argument("file")
    k8s = commands.add_parser("k8s")
    k8s.add_argument("files", nargs="+")
    k8s.add_argument(
        "--kubernetes-version",
        action="append",
        required=True,
        help="Kubernetes version whose schemas to validate against. Repeat it for more versions",
    )
    k8s.add_argument(
        "--rendered", action="store_true", help="the files are each one kustomize build output"
    )
    k8s.add_argument(
        "--expect-gpu", action="store_true", help="the generator must have an nvidia.com/gpu limit"
    )
    args = parser.parse_args()

    problems = Problems()
    if args.command == "dockerfile":
        check_dockerfile(args.file, problems)
    elif args.command == "compose":
        check_compose(args.file, problems)
    else:
        for path in args.files:
            resources = load_resources(path, problems)
            validate_schemas(path, resources, args.kubernetes_version, problems)
            if args.rendered and resources:
                check_rendered(path, resources, args.expect_gpu, problems)
    return 1 if problems.count else 0


if __name__ == "__main__":
    sys.exit(main())
