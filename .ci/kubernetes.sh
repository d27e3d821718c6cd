#!/usr/bin/env bash
# Validates deploy/kubernetes/ offline: every manifest against Kubernetes' own schemas
# (kubernetes-validate --strict: unknown fields are errors), kustomization.yaml against the folder
# (it lists every manifest, each one exists, its `images:` name is the Deployment's image), the
# settings against the server's own names, and the termination grace against the drain.
set -euo pipefail
cd "$(dirname "$0")/.."

readonly KUBERNETES_VERSION=1.37.0
readonly VENV=target/kubernetes-validate

if [[ ! -x $VENV/bin/kubernetes-validate ]]; then
  echo "kubernetes: installing kubernetes-validate (PyPI) into $VENV"
  if ! python3 -m venv "$VENV"; then
    # Debian's own python3 keeps venv in a separate package.
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq python3-venv >/dev/null
    rm -rf "$VENV"
    python3 -m venv "$VENV"
  fi
  "$VENV/bin/pip" install --quiet kubernetes-validate
fi
echo "kubernetes: kubernetes-validate $("$VENV/bin/kubernetes-validate" --version), Kubernetes $KUBERNETES_VERSION, strict"

mapfile -t manifests < <(find deploy/kubernetes -name '*.yaml' ! -name kustomization.yaml | sort)
"$VENV/bin/kubernetes-validate" --strict --kubernetes-version "$KUBERNETES_VERSION" "${manifests[@]}"

"$VENV/bin/python" - <<'PY'
import pathlib, re, sys, yaml

root = pathlib.Path("deploy/kubernetes")
kustomization = yaml.safe_load((root / "kustomization.yaml").read_text())
listed = kustomization["resources"]
present = sorted(p.name for p in root.glob("*.yaml") if p.name != "kustomization.yaml")
problems = [f"{name} is listed but missing" for name in listed if not (root / name).is_file()]
problems += [f"{name} is not listed in kustomization.yaml" for name in present if name not in listed]
images = {i["name"] for i in kustomization.get("images", [])}
for doc in yaml.safe_load_all((root / "deployment.yaml").read_text()):
    for container in doc["spec"]["template"]["spec"]["containers"]:
        if container["image"] not in images:
            problems.append(f"image {container['image']} is not rewritten by kustomization.yaml")

# Settings are the server's own environment names (each module's settings group under
# crates/bridge/src; RUST_LOG is tracing's), commented examples included, so a renamed setting
# cannot silently stop applying.
known = {"RUST_LOG"}
for source in pathlib.Path("crates/bridge/src").rglob("*.rs"):
    known |= set(re.findall(r'env = "([A-Z_]+)"', source.read_text()))
configmap = yaml.safe_load((root / "configmap.yaml").read_text())
secret = yaml.safe_load((root / "secret.yaml").read_text())
commented = re.findall(r"^\s*# ([A-Z][A-Z_]+):", (root / "configmap.yaml").read_text(), re.M)
for name in [*configmap["data"], *commented, *secret["stringData"]]:
    if name not in known:
        problems.append(f"{name} (configmap.yaml or secret.yaml) is not a setting of ivr-bridge")

# Kubernetes must wait longer than the drain, or it kills the calls the drain lets finish.
drain_s = int(configmap["data"]["DRAIN_TIMEOUT_S"])
pod = yaml.safe_load((root / "deployment.yaml").read_text())["spec"]["template"]["spec"]
grace_s = pod["terminationGracePeriodSeconds"]
pre_stop_s = pod["containers"][0]["lifecycle"]["preStop"]["sleep"]["seconds"]
if grace_s <= pre_stop_s + drain_s:
    problems.append(f"terminationGracePeriodSeconds {grace_s} <= preStop {pre_stop_s} + DRAIN_TIMEOUT_S {drain_s}")

for problem in problems:
    print(f"kubernetes: {problem}", file=sys.stderr)
if problems:
    sys.exit(1)
print(f"kubernetes: kustomization.yaml lists all {len(present)} manifests: {', '.join(listed)}")
print(f"kubernetes: every setting named is one of the server's {len(known)}; "
      f"grace {grace_s} s > preStop {pre_stop_s} s + DRAIN_TIMEOUT_S {drain_s} s")
PY
