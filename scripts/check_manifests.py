"""Checks of the project's Kubernetes manifests by tools nobody here wrote (run by scripts/manifests.sh,
part of `make test`):

- every object `socialnet-operator render` prints for each SocialCluster in examples/ passes
  `kubernetes-validate --strict` for the given Kubernetes version (the real API's OpenAPI schemas);
- the chart lints and renders with the real Helm engine (helm-python-sdk binds Helm's Go SDK), with its
  default values and with each values file in the chart's ci/ directory, and what it renders passes the
  same validator; so do the CRD and the e2e store manifests;
- a canary: a rendered object broken on purpose in a scratch copy is refused, so the checks can fail.

Exits non-zero when anything is refused.
"""

import argparse
import pathlib
import subprocess
import sys
import tempfile

import helm_python as helm
import yaml

ROOT = pathlib.Path(__file__).resolve().parent.parent
CHART = ROOT / "charts" / "socialnet-operator"
FAKE_UID = "6f1d2c3b-0a9e-4c8d-b7a6-5e4f3d2c1b0a"


def validate(k8s, files, strict=True):
    """kubernetes-validate on files; (ok, output)."""
    cmd = ["kubernetes-validate", "-k", k8s, "--quiet"] + (["--strict"] if strict else []) + [str(f) for f in files]
    run = subprocess.run(cmd, capture_output=True, text=True)
    out = (run.stdout + run.stderr).strip()
    # The validator knows no SocialCluster schema: that warning is not a failure (tests/build.rs checks
    # SocialClusters against the CRD's own schema and CEL rules).
    return run.returncode == 0, out


def documents(text):
    return [d for d in yaml.safe_load_all(text) if d]


def render_examples(operator, out_dir):
    files = []
    for example in sorted((ROOT / "examples").glob("*.yaml")):
        docs = documents(example.read_text())
        if not any(d.get("kind") == "SocialCluster" for d in docs):
            continue
        run = subprocess.run([operator, "render", "-f", str(example), "-n", "apps", "--uid", FAKE_UID],
                             capture_output=True, text=True)
        if run.returncode != 0:
            raise SystemExit(f"render {example.name} failed: {run.stderr}")
        rendered = documents(run.stdout)
        kinds = sorted({d["kind"] for d in rendered})
        print(f"  render {example.name}: {len(rendered)} objects ({', '.join(kinds)})")
        path = out_dir / f"render-{example.stem}.yaml"
        path.write_text(run.stdout)
        files.append(path)
    return files


def render_chart(out_dir):
    lint = helm.lint(str(CHART))
    if lint.get("errors"):
        raise SystemExit(f"helm lint: {lint['errors']}")
    print(f"  helm lint: {len(lint.get('messages', []))} message(s), no errors")
    values_files = [None] + sorted((CHART / "ci").glob("*.yaml"))
    files = []
    for values_file in values_files:
        values = yaml.safe_load(values_file.read_text()) if values_file else {}
        name = values_file.stem if values_file else "defaults"
        with helm.Chart.load(str(CHART)) as chart:
            rendered = chart.render(values, name="socialnet-operator", namespace="socialnet-system")
        text = "\n---\n".join(body for path, body in sorted(rendered.items()) if path.endswith(".yaml") and body.strip())
        docs = documents(text)
        print(f"  helm render ({name}): {len(docs)} objects ({', '.join(sorted(d['kind'] for d in docs))})")
        path = out_dir / f"chart-{name}.yaml"
        path.write_text(text)
        files.append(path)
    return files


def canary(k8s, rendered, out_dir):
    """A Deployment with a string where an integer belongs must be refused."""
    docs = documents(rendered.read_text())
    for d in docs:
        if d.get("kind") == "Deployment":
            d["spec"]["replicas"] = "three"
            d["spec"]["template"]["spec"]["containers"][0]["imagePullPolicy"] = {"not": "a string"}
            break
    broken = out_dir / "canary-broken.yaml"
    broken.write_text(yaml.safe_dump_all(docs))
    ok, out = validate(k8s, [broken])
    if ok:
        raise SystemExit("canary: the validator accepted a Deployment broken on purpose; the checks cannot fail")
    print("  canary: a Deployment broken on purpose is refused")


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--operator", required=True, help="the socialnet-operator binary")
    parser.add_argument("--k8s", default="1.32.0", help="Kubernetes version to validate against")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        out_dir = pathlib.Path(tmp)
        files = render_examples(args.operator, out_dir) + render_chart(out_dir)
        files += [ROOT / "crds" / "socialcluster.yaml", ROOT / "e2e" / "stores.yaml", ROOT / "examples" / "secrets.yaml"]
        failed = False
        for f in files:
            ok, out = validate(args.k8s, [f])
            print(f"  kubernetes-validate {args.k8s} --strict {f.name}: {'ok' if ok else 'REFUSED'}")
            if not ok:
                print(out)
                failed = True
        canary(args.k8s, files[0], out_dir)
    if failed:
        sys.exit(1)
    print("manifests: every rendered object is valid")


if __name__ == "__main__":
    main()
