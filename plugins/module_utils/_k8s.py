# Copyright (c) Thinkus platform team
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

"""Private Kubernetes API client shared by the thinkus.ops k8s_* modules.

Not a public API: the leading underscore means other collections must not import it.

The ``kubernetes`` Python client is used for what it does well (reading a kubeconfig,
TLS and authentication); requests go through its ``ApiClient.call_api`` with raw JSON so
that nothing is lost or renamed by model classes. The kinds the modules manage are known
in advance (``KINDS``), so no discovery round trip is needed.

What an object "is" for comparison and diff (``normalize``) and how a Secret is shown
(``redact_secret``) are pure functions, unit-tested without a cluster.
"""

from __future__ import annotations

import copy
import json
import os
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote, urlencode

try:
    from kubernetes import config as k8s_config
    from kubernetes.client.exceptions import ApiException
    from kubernetes.config.config_exception import ConfigException

    HAS_KUBERNETES = True
    KUBERNETES_IMPORT_ERROR = None
except ImportError as exc:  # pragma: no cover - depends on the controller's Python
    HAS_KUBERNETES = False
    KUBERNETES_IMPORT_ERROR = exc

try:
    import yaml

    HAS_YAML = True
except ImportError:  # pragma: no cover
    HAS_YAML = False

from ansible.module_utils.basic import env_fallback

# (apiVersion, kind) -> (API prefix, plural, namespaced)
KINDS: dict[tuple[str, str], tuple[str, str, bool]] = {
    ("v1", "Namespace"): ("api/v1", "namespaces", False),
    ("v1", "ConfigMap"): ("api/v1", "configmaps", True),
    ("v1", "Secret"): ("api/v1", "secrets", True),
    ("v1", "Service"): ("api/v1", "services", True),
    ("v1", "ServiceAccount"): ("api/v1", "serviceaccounts", True),
    ("v1", "Pod"): ("api/v1", "pods", True),
    ("v1", "Event"): ("api/v1", "events", True),
    ("apps/v1", "Deployment"): ("apis/apps/v1", "deployments", True),
    ("apps/v1", "ReplicaSet"): ("apis/apps/v1", "replicasets", True),
    ("autoscaling/v2", "HorizontalPodAutoscaler"): ("apis/autoscaling/v2", "horizontalpodautoscalers", True),
    ("policy/v1", "PodDisruptionBudget"): ("apis/policy/v1", "poddisruptionbudgets", True),
    ("coordination.k8s.io/v1", "Lease"): ("apis/coordination.k8s.io/v1", "leases", True),
}

# Kind name alone -> apiVersion, for options that take a list of kinds.
API_VERSION_OF_KIND = {kind: api_version for (api_version, kind) in KINDS}

# Annotations the server or a controller writes: not part of what we declare.
NOISE_ANNOTATIONS = frozenset(
    (
        "deployment.kubernetes.io/revision",
        "kubectl.kubernetes.io/last-applied-configuration",
    )
)
NOISE_METADATA = ("managedFields", "resourceVersion", "uid", "creationTimestamp", "generation", "selfLink")

REDACTED = "<redacted>"
REDACTED_CHANGED = "<redacted, changed>"


def k8s_argument_spec() -> dict[str, Any]:
    """The connection options every k8s_* module shares (doc fragment thinkus.ops.k8s)."""
    return dict(
        kubeconfig=dict(type="path", fallback=(env_fallback, ["K8S_AUTH_KUBECONFIG", "KUBECONFIG"])),
        context=dict(type="str", fallback=(env_fallback, ["K8S_AUTH_CONTEXT"])),
        request_timeout=dict(type="float", default=10.0),
    )


# --------------------------------------------------------------------------- errors


class K8sError(Exception):
    """A request the API server refused (``status`` set) or could not be sent."""

    def __init__(self, message: str, status: int | None = None, reason: str | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.reason = reason


class K8sUnreachable(K8sError):
    """The API server could not be reached at all (DNS, refused, TLS, timeout)."""


class K8sConfigError(K8sError):
    """The kubeconfig could not be read or names no usable context."""


def _status_message(data: Any, status: int) -> tuple[str, str | None]:
    """The server's own message and reason from an error answer (a Status object)."""
    try:
        answer = json.loads(data) if data else {}
    except (TypeError, ValueError):
        answer = {}
    if not isinstance(answer, dict):
        answer = {}
    message = answer.get("message") or f"HTTP {status}"
    return str(message), answer.get("reason")


def describe_connection_error(exc: BaseException) -> str:
    """A one-line cause for a connection failure, without the urllib3 object dump."""
    cause: BaseException = exc
    # MaxRetryError.reason -> NewConnectionError / SSLError / ...; walk to the innermost.
    for _depth in range(5):
        inner = getattr(cause, "reason", None)
        if isinstance(inner, BaseException):
            cause = inner
            continue
        break
    text = str(cause)
    lowered = text.lower()
    if "refused" in lowered:
        return "connection refused"
    if "timed out" in lowered or "timeout" in lowered:
        return "connection timed out"
    if "name or service not known" in lowered or "nodename nor servname" in lowered:
        return "host name not found"
    if "certificate" in lowered or "ssl" in lowered:
        return f"TLS error ({text.split(':', 1)[-1].strip()[:200]})"
    return text.split(": ", 1)[-1][:200] if ": " in text else text[:200]


# --------------------------------------------------------------------------- paths


@dataclass(frozen=True)
class ObjectRef:
    api_version: str
    kind: str
    name: str
    namespace: str | None = None

    @classmethod
    def of(cls, obj: dict[str, Any], default_namespace: str | None = None) -> ObjectRef:
        meta = obj.get("metadata") or {}
        api_version = obj.get("apiVersion") or ""
        kind = obj.get("kind") or ""
        namespaced = KINDS.get((api_version, kind), ("", "", True))[2]
        namespace = (meta.get("namespace") or default_namespace) if namespaced else None
        return cls(api_version, kind, meta.get("name") or "", namespace)

    def __str__(self) -> str:
        where = f"{self.namespace}/" if self.namespace else ""
        return f"{self.kind} {where}{self.name}"


def collection_path(api_version: str, kind: str, namespace: str | None = None) -> str:
    try:
        prefix, plural, namespaced = KINDS[(api_version, kind)]
    except KeyError:
        known = ", ".join(f"{k} ({v})" for v, k in sorted(KINDS))
        raise K8sError(f"unsupported kind {kind} ({api_version or 'no apiVersion'}); supported: {known}") from None
    if namespaced:
        if not namespace:
            raise K8sError(f"{kind} is namespaced: give metadata.namespace or the module's namespace option")
        return f"/{prefix}/namespaces/{quote(namespace, safe='')}/{plural}"
    return f"/{prefix}/{plural}"


def object_path(ref: ObjectRef) -> str:
    return f"{collection_path(ref.api_version, ref.kind, ref.namespace)}/{quote(ref.name, safe='')}"


# --------------------------------------------------------------------------- client


class K8sClient:
    """A thin JSON client over the kubernetes package's configured ApiClient."""

    def __init__(self, kubeconfig: str | None = None, context: str | None = None, request_timeout: float = 10.0):
        if not HAS_KUBERNETES:
            raise K8sConfigError(f"the kubernetes Python package is required: {KUBERNETES_IMPORT_ERROR}")
        self.kubeconfig = kubeconfig or None
        self.request_timeout = request_timeout
        self.context = context or None
        self.server = "(unknown server)"
        try:
            if self.kubeconfig:
                if not os.path.isfile(self.kubeconfig):
                    raise K8sConfigError(f"kubeconfig {self.kubeconfig} does not exist")
                self.context = self._resolve_context(self.kubeconfig, self.context)
                self.api = k8s_config.new_client_from_config(config_file=self.kubeconfig, context=self.context)
            elif os.environ.get("KUBERNETES_SERVICE_HOST"):
                self.context = "in-cluster"
                k8s_config.load_incluster_config()
                from kubernetes.client import ApiClient

                self.api = ApiClient()
            else:
                default = os.path.expanduser("~/.kube/config")
                self.kubeconfig = default
                self.context = self._resolve_context(default, self.context)
                self.api = k8s_config.new_client_from_config(config_file=default, context=self.context)
        except ConfigException as exc:
            raise K8sConfigError(f"cannot use kubeconfig {self.kubeconfig} (context {self.context!r}): {exc}") from None
        configuration = self.api.configuration
        self.server = configuration.host
        # Fail fast on an unreachable server: one try, bounded by request_timeout.
        configuration.retries = False

    @staticmethod
    def _resolve_context(kubeconfig: str, context: str | None) -> str:
        try:
            contexts, active = k8s_config.list_kube_config_contexts(config_file=kubeconfig)
        except (ConfigException, OSError) as exc:
            raise K8sConfigError(f"cannot read kubeconfig {kubeconfig}: {exc}") from None
        names = [c["name"] for c in contexts or []]
        if context:
            if context not in names:
                raise K8sConfigError(f"context {context!r} is not in kubeconfig {kubeconfig} (it has: {names})")
            return context
        if not active:
            raise K8sConfigError(f"kubeconfig {kubeconfig} has no current-context; set the context option")
        return str(active["name"])

    def where(self) -> str:
        return f"{self.server} (kubeconfig context {self.context!r})"

    def request(
        self,
        method: str,
        path: str,
        body: Any = None,
        query: dict[str, Any] | None = None,
        content_type: str = "application/json",
        not_found_ok: bool = False,
    ) -> Any:
        """Send one request; return the decoded JSON answer (None on 404 when allowed)."""
        query_string = urlencode({k: v for k, v in (query or {}).items() if v is not None})
        url_path = f"{path}?{query_string}" if query_string else path
        headers = {"Accept": "application/json"}
        payload = None
        if body is not None:
            headers["Content-Type"] = content_type
            # The client serializes JSON bodies itself; an apply patch goes as a ready string.
            payload = json.dumps(body) if content_type.endswith("+yaml") else body
        try:
            status, data = self._send(method, url_path, headers, payload)
        except ApiException as exc:  # older clients raise on every non-2xx answer
            status, data = exc.status, (exc.body or "")
            if not status:
                raise K8sUnreachable(f"cannot reach the Kubernetes API server {self.where()}: {exc.reason}") from None
        except Exception as exc:  # urllib3 errors: refused, DNS, TLS, timeouts
            if type(exc).__module__.startswith(("urllib3", "ssl", "socket")) or isinstance(exc, OSError):
                raise K8sUnreachable(
                    f"cannot reach the Kubernetes API server {self.where()}: {describe_connection_error(exc)}"
                ) from None
            raise
        if status == 404 and not_found_ok:
            return None
        if not 200 <= status <= 299:
            message, reason = _status_message(data, status)
            raise K8sError(message, status=status, reason=reason)
        return json.loads(data) if data else None

    def log_tail(self, namespace: str, pod: str, container: str, lines: int = 5, previous: bool = False) -> str:
        """The last ``lines`` lines a container wrote (its previous instance with ``previous``); "" if none."""
        query = urlencode({"container": container, "tailLines": lines, "previous": str(previous).lower()})
        path = f"/api/v1/namespaces/{quote(namespace)}/pods/{quote(pod)}/log?{query}"
        try:
            status, data = self._send("GET", path, {"Accept": "*/*"}, None)
        except Exception:  # a log is a detail of a failure message: never a new failure
            return ""
        if not 200 <= status <= 299:
            return ""
        text = data.decode(errors="replace") if isinstance(data, bytes) else str(data or "")
        return text.strip()

    def _send(self, method: str, url_path: str, headers: dict[str, str], payload: Any) -> tuple[int, Any]:
        """One HTTP exchange through the kubernetes client; returns (status, body bytes)."""
        if hasattr(self.api, "param_serialize"):  # kubernetes >= 33 (new generator)
            method, url, headers, body, post = self.api.param_serialize(
                method, url_path, header_params=headers, body=payload, auth_settings=["BearerToken"]
            )
            response = self.api.call_api(
                method, url, header_params=headers, body=body, post_params=post, _request_timeout=self.request_timeout
            )
            return response.status, response.read()
        response = self.api.call_api(  # pragma: no cover - kubernetes < 33
            url_path,
            method,
            header_params=headers,
            body=payload,
            auth_settings=["BearerToken"],
            _preload_content=False,
            _return_http_data_only=False,
            _request_timeout=self.request_timeout,
        )
        return response[1], response[0].data

    # -- object helpers -------------------------------------------------------------

    def get(self, ref: ObjectRef) -> dict[str, Any] | None:
        return self.request("GET", object_path(ref), not_found_ok=True)

    def list(
        self,
        api_version: str,
        kind: str,
        namespace: str | None,
        label_selector: str | None = None,
        field_selector: str | None = None,
    ) -> list[dict[str, Any]]:
        answer = self.request(
            "GET",
            collection_path(api_version, kind, namespace),
            query={"labelSelector": label_selector, "fieldSelector": field_selector},
        )
        items = (answer or {}).get("items") or []
        for item in items:  # list items carry no apiVersion/kind
            item.setdefault("apiVersion", api_version)
            item.setdefault("kind", kind)
        return items

    def apply(
        self, obj: dict[str, Any], field_manager: str, force: bool = True, dry_run: bool = False
    ) -> dict[str, Any]:
        """Server-side apply of one object (PATCH application/apply-patch+yaml)."""
        ref = ObjectRef.of(obj)
        return self.request(
            "PATCH",
            object_path(ref),
            body=obj,
            query={
                "fieldManager": field_manager,
                "force": "true" if force else None,
                "dryRun": "All" if dry_run else None,
            },
            content_type="application/apply-patch+yaml",
        )

    def delete(self, ref: ObjectRef, dry_run: bool = False) -> None:
        self.request(
            "DELETE",
            object_path(ref),
            body={"kind": "DeleteOptions", "apiVersion": "v1", "propagationPolicy": "Background"},
            query={"dryRun": "All" if dry_run else None},
            not_found_ok=True,
        )


# --------------------------------------------------------------------------- comparison


def normalize(obj: dict[str, Any] | None) -> dict[str, Any] | None:
    """The object as declared state: no status, no server bookkeeping in metadata.

    Both sides of a comparison come from the server (live object and apply answer), so
    defaulted fields are on both sides and never show as a difference.
    """
    if obj is None:
        return None
    out = copy.deepcopy(obj)
    out.pop("status", None)
    meta = out.get("metadata") or {}
    for key in NOISE_METADATA:
        meta.pop(key, None)
    annotations = meta.get("annotations")
    if annotations:
        for key in NOISE_ANNOTATIONS:
            annotations.pop(key, None)
        if not annotations:
            meta.pop("annotations", None)
    return out


def redact_secret(before: dict[str, Any] | None, after: dict[str, Any] | None) -> tuple[Any, Any]:
    """Secret values replaced by markers; a changed value is marked as changed."""

    def values(obj: dict[str, Any] | None) -> dict[str, str]:
        return dict((obj or {}).get("data") or {})

    old, new = values(before), values(after)
    before_out = copy.deepcopy(before)
    after_out = copy.deepcopy(after)
    for out in (before_out, after_out):
        if out is not None:
            out.pop("stringData", None)
    if before_out is not None and "data" in before_out:
        before_out["data"] = dict.fromkeys(old, REDACTED)
    if after_out is not None and "data" in after_out:
        after_out["data"] = {
            key: (REDACTED_CHANGED if old.get(key) != value else REDACTED) for key, value in new.items()
        }
    return before_out, after_out


def to_yaml(obj: Any) -> str:
    if obj is None:
        return ""
    if HAS_YAML:
        return yaml.safe_dump(obj, default_flow_style=False, sort_keys=True)
    return json.dumps(obj, indent=2, sort_keys=True) + "\n"  # pragma: no cover


def object_diff(ref: ObjectRef, before: dict[str, Any] | None, after: dict[str, Any] | None) -> dict[str, str]:
    """An Ansible diff entry for one object (both sides already normalized)."""
    if ref.kind == "Secret":
        before, after = redact_secret(before, after)
    return {
        "before_header": f"{ref} (live)" if before is not None else f"{ref} (absent)",
        "after_header": f"{ref} (applied)" if after is not None else f"{ref} (deleted)",
        "before": to_yaml(before),
        "after": to_yaml(after),
    }


def is_transient(exc: K8sError) -> bool:
    """Whether a failed request may succeed if tried again: no answer at all, or the API server
    busy or starting (429, 5xx). Refusals (4xx) and local errors are final."""
    return isinstance(exc, K8sUnreachable) or exc.status in (429, 500, 502, 503, 504)
