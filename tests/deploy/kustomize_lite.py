"""Render the kustomizations of deploy/k8s without kustomize, for checks on machines without it.

Implements exactly the kustomization fields deploy/k8s uses (resources, namespace, images,
replicas, JSON 6902 patches with a kind/name target) and refuses any other field, so a manifest
change that needs more shows up as an error here rather than as a silent difference. Where
`kubectl kustomize` exists, tests compare its output with this one.

    python -m tests.deploy.kustomize_lite deploy/k8s/overlays/example   # YAML on stdout
"""

from __future__ import annotations

import copy
import sys
from pathlib import Path
from typing import Any

import yaml

SUPPORTED_FIELDS = {"apiVersion", "kind", "namespace", "resources", "images", "replicas", "patches"}
CLUSTER_SCOPED = {"Namespace", "ClusterRole", "ClusterRoleBinding", "CustomResourceDefinition",
                  "PersistentVolume", "StorageClass", "IngressClass", "PriorityClass"}


class KustomizeError(Exception):
    """The kustomization uses something this renderer does not implement, or is broken."""


def load_documents(path: Path) -> list[dict[str, Any]]:
    with path.open() as stream:
        return [doc for doc in yaml.safe_load_all(stream) if doc is not None]


def build(directory: Path) -> list[dict[str, Any]]:
    """The objects a kustomization directory renders to, in resource order."""
    kustomization_file = directory / "kustomization.yaml"
    if not kustomization_file.is_file():
        raise KustomizeError(f"{directory}: no kustomization.yaml")
    kustomization = yaml.safe_load(kustomization_file.read_text())
    unsupported = set(kustomization) - SUPPORTED_FIELDS
    if unsupported:
        raise KustomizeError(f"{kustomization_file}: fields not implemented here: {sorted(unsupported)}")
    objects: list[dict[str, Any]] = []
    for entry in kustomization.get("resources", []):
        target = (directory / entry).resolve()
        if target.is_dir():
            objects.extend(build(target))
        elif target.is_file():
            objects.extend(load_documents(target))
        else:
            raise KustomizeError(f"{kustomization_file}: resource {entry!r} does not exist")
    for patch in kustomization.get("patches", []):
        _apply_patch(objects, patch, kustomization_file)
    for image in kustomization.get("images", []):
        _set_image(objects, image, kustomization_file)
    for replicas in kustomization.get("replicas", []):
        _set_replicas(objects, replicas, kustomization_file)
    namespace = kustomization.get("namespace")
    if namespace:
        for obj in objects:
            if obj["kind"] == "Namespace":
                continue
            if obj["kind"] not in CLUSTER_SCOPED:
                obj.setdefault("metadata", {})["namespace"] = namespace
    return objects


def _matching(objects, target: dict[str, str]) -> list[dict[str, Any]]:
    unsupported = set(target) - {"kind", "name"}
    if unsupported:
        raise KustomizeError(f"patch target fields not implemented here: {sorted(unsupported)}")
    found = [obj for obj in objects
             if obj["kind"] == target.get("kind", obj["kind"])
             and obj["metadata"]["name"] == target.get("name", obj["metadata"]["name"])]
    if not found:
        raise KustomizeError(f"patch target {target} matches no resource")
    return found


def _apply_patch(objects, patch: dict[str, Any], where: Path) -> None:
    if set(patch) != {"target", "patch"}:
        raise KustomizeError(f"{where}: only inline JSON 6902 patches with a target are implemented")
    operations = yaml.safe_load(patch["patch"])
    if not isinstance(operations, list):
        raise KustomizeError(f"{where}: strategic merge patches are not implemented here")
    for obj in _matching(objects, patch["target"]):
        for operation in operations:
            _json_patch(obj, operation, where)


def _json_patch(obj: dict[str, Any], operation: dict[str, Any], where: Path) -> None:
    op, path = operation["op"], operation["path"]
    keys = [part.replace("~1", "/").replace("~0", "~") for part in path.lstrip("/").split("/")]
    parent: Any = obj
    for key in keys[:-1]:
        parent = parent[int(key)] if isinstance(parent, list) else parent[key]
    last = keys[-1]
    if isinstance(parent, list):
        index = len(parent) if last == "-" else int(last)
        if op == "add":
            parent.insert(index, copy.deepcopy(operation["value"]))
        elif op == "replace":
            parent[index] = copy.deepcopy(operation["value"])
        elif op == "remove":
            del parent[index]
        else:
            raise KustomizeError(f"{where}: JSON patch op {op!r} not implemented here")
        return
    if op in ("add", "replace"):
        if op == "replace" and last not in parent:
            raise KustomizeError(f"{where}: replace of missing path {path}")
        parent[last] = copy.deepcopy(operation["value"])
    elif op == "remove":
        del parent[last]
    else:
        raise KustomizeError(f"{where}: JSON patch op {op!r} not implemented here")


def pod_spec(obj: dict[str, Any]) -> dict[str, Any] | None:
    if obj["kind"] in ("Deployment", "StatefulSet", "DaemonSet", "Job"):
        return obj["spec"]["template"]["spec"]
    if obj["kind"] == "CronJob":
        return obj["spec"]["jobTemplate"]["spec"]["template"]["spec"]
    return None


def image_name(image: str) -> str:
    """`registry/name:tag@sha256:…` → `registry/name` (a registry port is not a tag)."""
    name = image.split("@", 1)[0]
    slash = name.rfind("/")
    colon = name.rfind(":")
    return name[:colon] if colon > slash else name


def _set_image(objects, image: dict[str, str], where: Path) -> None:
    used = False
    for obj in objects:
        spec = pod_spec(obj)
        if spec is None:
            continue
        for container in spec.get("initContainers", []) + spec.get("containers", []):
            if image_name(container["image"]) != image["name"]:
                continue
            used = True
            name = image.get("newName", image["name"])
            if "digest" in image:
                container["image"] = f"{name}@{image['digest']}"
            else:
                old_tag = container["image"][len(image["name"]):].lstrip(":")
                container["image"] = f"{name}:{image.get('newTag', old_tag)}" if (
                    image.get("newTag") or old_tag) else name
    if not used:
        raise KustomizeError(f"{where}: image {image['name']!r} is used by no container")


def _set_replicas(objects, replicas: dict[str, Any], where: Path) -> None:
    found = [obj for obj in objects if obj["kind"] in ("Deployment", "StatefulSet")
             and obj["metadata"]["name"] == replicas["name"]]
    if not found:
        raise KustomizeError(f"{where}: replicas for unknown workload {replicas['name']!r}")
    for obj in found:
        obj["spec"]["replicas"] = replicas["count"]


def main(argv: list[str]) -> int:
    if len(argv) != 1:
        print("usage: python -m tests.deploy.kustomize_lite DIRECTORY", file=sys.stderr)
        return 2
    try:
        objects = build(Path(argv[0]))
    except KustomizeError as exc:
        print(f"kustomize_lite: {exc}", file=sys.stderr)
        return 1
    yaml.safe_dump_all(objects, sys.stdout, sort_keys=False)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
