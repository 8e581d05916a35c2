# Copyright (c) Thinkus platform team
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

"""Private Kubernetes API client shared by the thinkus.ops k8s_* modules.

Not a public API: the leading underscore means other collections must not import it.

Requests are raw JSON, so that nothing is lost or renamed by model classes. The kubeconfig,
TLS and authentication come from ``_kubeconfig`` (standard library only, a few milliseconds);
the ``kubernetes`` package (half a second to import) is loaded only for what that file leaves
to it: a legacy ``auth-provider`` or a ``proxy-url``.

Kinds are resolved through the API server's own discovery (``Discovery``): the resource
list of a group version (``/api/v1``, ``/apis/<group>/<version>``) is read the first time
a kind of it is needed and kept for the rest of the module's run. So every kind the
cluster serves can be applied, read and deleted, built-in or defined by a
CustomResourceDefinition, and nothing in this file lists kinds.

What an object "is" for comparison and diff (``normalize``) and how a Secret is shown
(``redact_secret``) are pure functions, unit-tested without a cluster.
"""

from __future__ import annotations

import copy
import json
import os
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote, urlencode

from ansible_collections.thinkus.ops.plugins.module_utils import _kubeconfig

try:
    import yaml

    HAS_YAML = True
except ImportError:  # pragma: no cover
    HAS_YAML = False

from ansible.module_utils.basic import env_fallback

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


# --------------------------------------------------------------------------- kinds


@dataclass(frozen=True)
class ObjectRef:
    api_version: str
    kind: str
    name: str
    namespace: str | None = None

    @classmethod
    def of(cls, obj: dict[str, Any], default_namespace: str | None = None, namespaced: bool = True) -> ObjectRef:
        """The reference of a manifest or a server object; ``namespaced`` comes from discovery."""
        meta = obj.get("metadata") or {}
        namespace = (meta.get("namespace") or default_namespace) if namespaced else None
        return cls(obj.get("apiVersion") or "", obj.get("kind") or "", meta.get("name") or "", namespace)

    def __str__(self) -> str:
        where = f"{self.namespace}/" if self.namespace else ""
        return f"{self.kind} {where}{self.name}"


@dataclass(frozen=True)
class Resource:
    """One kind as the API server serves it (an entry of a group version's resource list)."""

    api_version: str
    kind: str
    plural: str
    namespaced: bool
    verbs: tuple[str, ...] = ()

    @property
    def group(self) -> str:
        return self.api_version.rpartition("/")[0]

    def collection_path(self, namespace: str | None = None, all_namespaces: bool = False) -> str:
        """The objects of this kind in ``namespace``, cluster-wide, or (``all_namespaces``) in every namespace."""
        prefix = "api/v1" if self.api_version == "v1" else f"apis/{self.api_version}"
        if self.namespaced and not (all_namespaces and not namespace):
            if not namespace:
                raise K8sError(f"{self.kind} is namespaced: give metadata.namespace or the module's namespace option")
            return f"/{prefix}/namespaces/{quote(namespace, safe='')}/{self.plural}"
        return f"/{prefix}/{self.plural}"

    def object_path(self, name: str, namespace: str | None = None) -> str:
        return f"{self.collection_path(namespace)}/{quote(name, safe='')}"


def group_version_path(api_version: str) -> str:
    """Where the API server lists the resources of a group version."""
    if not api_version or api_version.count("/") > 1 or api_version.startswith("/"):
        raise K8sError(f"invalid apiVersion {api_version!r}")
    return "/api/v1" if api_version == "v1" else f"/apis/{api_version}"


def resources_of(api_version: str, answer: dict[str, Any] | None) -> dict[str, Resource]:
    """Kind -> Resource from an APIResourceList, without subresources (``deployments/scale``)."""
    found: dict[str, Resource] = {}
    for item in (answer or {}).get("resources") or []:
        name = item.get("name") or ""
        if not name or "/" in name or not item.get("kind"):
            continue
        found.setdefault(
            item["kind"],
            Resource(api_version, item["kind"], name, bool(item.get("namespaced")), tuple(item.get("verbs") or ())),
        )
    return found


class UnknownKind(K8sError):
    """The API server serves no such kind (its group version, or the kind in it, is missing)."""


class Discovery:
    """The kinds the API server serves, read from its discovery documents and kept for the run.

    ``fetch(path)`` returns the decoded JSON of a GET, or None when the server answers 404.
    A group version is read once; ``forget`` drops it (a CustomResourceDefinition applied
    since may have added kinds to it).
    """

    def __init__(self, fetch: Callable[[str], dict[str, Any] | None]) -> None:
        self._fetch = fetch
        self._group_versions: dict[str, dict[str, Resource] | None] = {}
        self._preferred: list[str] | None = None

    def kinds_of(self, api_version: str) -> dict[str, Resource] | None:
        """Kind -> Resource of one group version, or None when the server does not serve it."""
        if api_version not in self._group_versions:
            answer = self._fetch(group_version_path(api_version))
            self._group_versions[api_version] = None if answer is None else resources_of(api_version, answer)
        return self._group_versions[api_version]

    def forget(self, api_version: str) -> None:
        self._group_versions.pop(api_version, None)

    def resource(self, api_version: str, kind: str) -> Resource:
        kinds = self.kinds_of(api_version)
        if kinds is None:
            raise UnknownKind(f"the API server does not serve apiVersion {api_version} (for kind {kind})", status=404)
        if kind not in kinds:
            known = ", ".join(sorted(kinds)) or "none"
            raise UnknownKind(f"the API server has no kind {kind} in {api_version} (it has: {known})", status=404)
        return kinds[kind]

    def preferred_versions(self) -> list[str]:
        """The preferred version of every group the server serves, core first."""
        if self._preferred is None:
            core = self._fetch("/api") or {}
            groups = self._fetch("/apis") or {}
            versions = list(core.get("versions") or ["v1"])
            for group in groups.get("groups") or []:
                preferred = (group.get("preferredVersion") or {}).get("groupVersion")
                if preferred:
                    versions.append(preferred)
            self._preferred = versions
        return self._preferred

    def find_kind(self, kind: str) -> Resource:
        """A kind given by name alone, in the preferred version of the group that serves it."""
        matches = []
        unavailable = []
        for api_version in self.preferred_versions():
            try:
                found = (self.kinds_of(api_version) or {}).get(kind)
            except K8sUnreachable:
                raise
            except K8sError:  # an aggregated API that is down (503) must not hide the others
                unavailable.append(api_version)
                continue
            if found:
                matches.append(found)
        if not matches:
            also = f" (not answering: {', '.join(unavailable)})" if unavailable else ""
            raise UnknownKind(f"the API server serves no kind {kind}{also}", status=404)
        if len(matches) > 1:
            versions = ", ".join(m.api_version for m in matches)
            raise K8sError(f"kind {kind} is served by more than one group ({versions}): give it as <apiVersion>/{kind}")
        return matches[0]


# --------------------------------------------------------------------------- client


class K8sClient:
    """A thin JSON client over the kubernetes package's configured ApiClient."""

    def __init__(self, kubeconfig: str | None = None, context: str | None = None, request_timeout: float = 10.0):
        self.kubeconfig = kubeconfig or None
        self.request_timeout = request_timeout
        self.context = context or None
        self.server = "(unknown server)"
        self.transport: _kubeconfig.Transport | None = None
        self.api: Any = None
        try:
            if self.kubeconfig:
                endpoint = _kubeconfig.load(self.kubeconfig, self.context)
            elif os.environ.get("KUBERNETES_SERVICE_HOST"):
                endpoint = _kubeconfig.in_cluster()
            else:
                self.kubeconfig = os.path.expanduser("~/.kube/config")
                endpoint = _kubeconfig.load(self.kubeconfig, self.context)
            self.transport = _kubeconfig.Transport(endpoint, request_timeout)
            self.context, self.server = endpoint.context, endpoint.server
        except _kubeconfig.Unsupported:
            self._use_kubernetes_package()
        except _kubeconfig.KubeconfigError as exc:
            raise K8sConfigError(str(exc)) from None
        self.discovery = Discovery(lambda path: self.request("GET", path, not_found_ok=True))

    def _use_kubernetes_package(self) -> None:
        """The kubernetes package's loader, for what _kubeconfig leaves to it."""
        try:
            from kubernetes import config as k8s_config
            from kubernetes.config.config_exception import ConfigException
        except ImportError as exc:
            raise K8sConfigError(
                f"kubeconfig {self.kubeconfig} uses an auth-provider or a proxy-url: that needs the kubernetes "
                f"Python package ({exc})"
            ) from None
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
            names, active = _kubeconfig.context_names(kubeconfig)
        except _kubeconfig.KubeconfigError as exc:
            raise K8sConfigError(str(exc)) from None
        if context:
            if context not in names:
                raise K8sConfigError(f"context {context!r} is not in kubeconfig {kubeconfig} (it has: {names})")
            return context
        if not active:
            raise K8sConfigError(f"kubeconfig {kubeconfig} has no current-context; set the context option")
        return str(active)

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
        except _kubeconfig.KubeconfigError as exc:  # an exec plugin or a token file, read per request
            raise K8sConfigError(str(exc)) from None
        except Exception as exc:  # refused, DNS, TLS, timeouts (and urllib3's errors on the fallback path)
            if type(exc).__name__ == "ApiException" and getattr(exc, "status", None):
                status, data = exc.status, (getattr(exc, "body", None) or "")  # older kubernetes clients
            elif type(exc).__module__.startswith(
                ("urllib3", "ssl", "socket", "http.client", "kubernetes")
            ) or isinstance(exc, OSError):
                raise K8sUnreachable(
                    f"cannot reach the Kubernetes API server {self.where()}: {describe_connection_error(exc)}"
                ) from None
            else:
                raise
        if status == 404 and not_found_ok:
            return None
        if not 200 <= status <= 299:
            message, reason = _status_message(data, status)
            if status == 429 or status >= 500:  # the server itself, not the request: say which server
                message = f"the Kubernetes API server {self.where()} answered {status}: {message}"
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
        """One HTTP exchange; returns (status, body bytes)."""
        if self.transport is not None:
            if payload is not None and not isinstance(payload, (str, bytes)):
                payload = json.dumps(payload)
            if isinstance(payload, str):
                payload = payload.encode("utf-8")
            return self.transport.send(method, url_path, headers, payload)
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

    def resource(self, api_version: str, kind: str) -> Resource:
        """How the server serves a kind (discovery, read once per group version)."""
        return self.discovery.resource(api_version, kind)

    def ref_of(self, obj: dict[str, Any], default_namespace: str | None = None) -> ObjectRef:
        """The reference of a manifest, namespaced or not as the server says."""
        resource = self.resource(obj.get("apiVersion") or "", obj.get("kind") or "")
        return ObjectRef.of(obj, default_namespace, resource.namespaced)

    def object_path(self, ref: ObjectRef) -> str:
        return self.resource(ref.api_version, ref.kind).object_path(ref.name, ref.namespace)

    def get(self, ref: ObjectRef) -> dict[str, Any] | None:
        return self.request("GET", self.object_path(ref), not_found_ok=True)

    def list(
        self,
        api_version: str,
        kind: str,
        namespace: str | None,
        label_selector: str | None = None,
        field_selector: str | None = None,
    ) -> list[dict[str, Any]]:
        """The objects of a kind: in ``namespace`` (all namespaces if None) or cluster-wide."""
        resource = self.resource(api_version, kind)
        answer = self.request(
            "GET",
            resource.collection_path(namespace, all_namespaces=True),
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
        ref = self.ref_of(obj)
        return self.request(
            "PATCH",
            self.object_path(ref),
            body=obj,
            query={
                "fieldManager": field_manager,
                "force": "true" if force else None,
                "dryRun": "All" if dry_run else None,
            },
            content_type="application/apply-patch+yaml",
        )

    def delete(self, ref: ObjectRef, dry_run: bool = False) -> dict[str, Any] | None:
        """Delete one object (background propagation); its last state, or None if it was gone.

        The dry run goes in the DeleteOptions body: the API server reads the options from the
        body when there is one and then ignores the query string's ``dryRun``.
        """
        options: dict[str, Any] = {"kind": "DeleteOptions", "apiVersion": "v1", "propagationPolicy": "Background"}
        if dry_run:
            options["dryRun"] = ["All"]
        return self.request(
            "DELETE",
            self.object_path(ref),
            body=options,
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
