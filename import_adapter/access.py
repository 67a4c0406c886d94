"""Who may use which DIMSE service of the import adapter: one policy.

The policy has one rule per service (store, query, retrieve, commit): whether the service is
switched on, and optional allow-lists of calling AE titles and source networks (CIDRs). A rule
without lists admits everyone; with both, a requester must match both. Verification (C-ECHO)
is open to every association that is accepted.

Enforcement, in the listener:

- at association time (:mod:`import_adapter.admission`): a requester that may use no service
  at all gets A-ASSOCIATE-RJ (rejected-permanent, service user, calling AE title not
  recognized); a requester denied retrieval has its C-MOVE presentation contexts refused, so
  it learns before it asks (and before it waits for sub-operations);
- per request (:mod:`import_adapter.dispatch`): a service the requester may not use is
  answered 0x0124 Not Authorized;
- a switched-off query, retrieve or commit service is not offered at all (its contexts are
  refused); switched-off storage answers 0x0124 (storage contexts must stay for C-GET).

The policy judges a :class:`Requester`, its address parsed when the association is admitted
and once more for its first request, not for every C-STORE.

The JSON policy file (``--access_policy``)::

    {"store":    {"calling_aets": ["MODALITY1"], "networks": ["10.0.0.0/8"]},
     "query":    {"calling_aets": ["WORKSTATION"]},
     "retrieve": {"enabled": false},
     "commit":   {}}

Services it does not name take the global ``--allowed_calling_aets`` / ``--allowed_networks``.
"""

from __future__ import annotations

import enum
import ipaddress
import logging
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from common.config_source import parse_json
from common.dimse.ae_title import validate_ae_title
from common.errors import ConfigError
from common.status import DimseStatus, not_authorized_status, service_disabled_status

LOG = logging.getLogger(__name__)

Network = ipaddress.IPv4Network | ipaddress.IPv6Network
Address = ipaddress.IPv4Address | ipaddress.IPv6Address


class Service(enum.Enum):
    """The services the policy controls (names as in the policy file)."""

    STORE = "store"
    QUERY = "query"
    RETRIEVE = "retrieve"
    COMMIT = "commit"

    @property
    def label(self) -> str:
        """For status comments and logs."""
        return {
            Service.STORE: "C-STORE",
            Service.QUERY: "C-FIND",
            Service.RETRIEVE: "C-MOVE/C-GET",
            Service.COMMIT: "Storage Commitment",
        }[self]


def _address(host: str) -> Address | None:
    try:
        ip = ipaddress.ip_address(host.split("%", 1)[0])
    except ValueError:
        return None
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        return ip.ipv4_mapped  # a dual-stack listener sees IPv4 peers as ::ffff:a.b.c.d
    return ip


@dataclass(frozen=True)
class Requester:
    """Who asks, as the policy judges it: made once per association.

    Attributes:
        calling_aet: the calling AE title, without padding.
        address: the source address (an IPv4-mapped IPv6 address as IPv4; None: the host is
            not an IP address, so it is in no allowed network).
    """

    calling_aet: str
    address: Address | None

    @classmethod
    def of(cls, calling_aet: str, host: str) -> Requester:
        """The requester with this calling AE title, connected from ``host``."""
        return cls(calling_aet.strip(), _address(host))


@dataclass(frozen=True)
class ServiceRule:
    """Who may use one service.

    Attributes:
        enabled: whether the service is offered at all.
        calling_aets: AE titles allowed (None: any).
        networks: source networks allowed (None: any).
    """

    enabled: bool = True
    calling_aets: frozenset[str] | None = None
    networks: tuple[Network, ...] | None = None

    def allows(self, requester: Requester) -> bool:
        """Whether ``requester`` may use the service."""
        if not self.enabled:
            return False
        if self.calling_aets is not None and requester.calling_aet not in self.calling_aets:
            return False
        if self.networks is not None:
            ip = requester.address
            if ip is None or not any(ip in net for net in self.networks):
                return False
        return True


#: The rule of a service the policy does not mention (checked on every request: made once).
_OPEN = ServiceRule()


@dataclass(frozen=True)
class AccessPolicy:
    """The rules of all services (the default admits everyone to everything)."""

    rules: Mapping[Service, ServiceRule] = field(default_factory=dict)

    def rule(self, service: Service) -> ServiceRule:
        """The rule of ``service`` (an open one when none was given)."""
        return self.rules.get(service, _OPEN)

    def enabled(self, service: Service) -> bool:
        """Whether ``service`` is switched on."""
        return self.rule(service).enabled

    def allows(self, service: Service, requester: Requester) -> bool:
        """Whether ``requester`` may use ``service``."""
        return self.rule(service).allows(requester)

    def allows_any(self, requester: Requester) -> bool:
        """Whether ``requester`` may use at least one service (else: reject the association)."""
        return any(self.allows(service, requester) for service in Service)

    def refusal(self, service: Service, requester: Requester) -> DimseStatus | None:
        """The 0x0124 status for a request the policy refuses, or None when allowed."""
        rule = self.rule(service)
        if not rule.enabled:
            return service_disabled_status(service.label)
        if not rule.allows(requester):
            return not_authorized_status(service.label)
        return None


def parse_calling_aets(values: Iterable[str], where: str) -> frozenset[str]:
    """Validated AE titles.

    Raises:
        ConfigError: one is not a valid AE title.
    """
    titles: set[str] = set()
    for value in values:
        if not isinstance(value, str):
            raise ConfigError(f"{where}: AE titles must be strings")
        try:
            titles.add(validate_ae_title(value))
        except ConfigError as exc:
            raise ConfigError(f"{where}: {exc}") from exc
    return frozenset(titles)


def parse_networks(values: Iterable[str], where: str) -> tuple[Network, ...]:
    """Networks from CIDRs or single addresses (``10.0.0.0/8``, ``192.168.1.7``, ``::1``).

    Raises:
        ConfigError: one is not an address or network.
    """
    networks: list[Network] = []
    for value in values:
        if not isinstance(value, str):
            raise ConfigError(f"{where}: networks must be strings like 10.0.0.0/8")
        try:
            networks.append(ipaddress.ip_network(value.strip(), strict=False))
        except ValueError as exc:
            raise ConfigError(f"{where}: {value!r} is not an address or CIDR network") from exc
    return tuple(networks)


def _csv(text: str | None) -> list[str] | None:
    if text is None or not text.strip():
        return None
    return [part.strip() for part in text.split(",") if part.strip()]


_RULE_KEYS = frozenset({"enabled", "calling_aets", "networks"})


def _rule_from_json(data: Any, where: str, default: ServiceRule) -> ServiceRule:
    if not isinstance(data, dict):
        raise ConfigError(f"{where} must be an object with enabled, calling_aets, networks")
    unknown = sorted(set(data) - _RULE_KEYS)
    if unknown:
        raise ConfigError(f"{where} has unknown key(s) {', '.join(map(str, unknown))}")
    enabled = data.get("enabled", True)
    if not isinstance(enabled, bool):
        raise ConfigError(f"{where}: enabled must be true or false")
    aets = data.get("calling_aets")
    networks = data.get("networks")
    for name, value in (("calling_aets", aets), ("networks", networks)):
        if value is not None and not isinstance(value, list):
            raise ConfigError(f"{where}: {name} must be a list")
    return ServiceRule(
        enabled=enabled,
        calling_aets=(
            default.calling_aets if aets is None else parse_calling_aets(aets, where)
        ),
        networks=default.networks if networks is None else parse_networks(networks, where),
    )


def parse_access_policy(
    text: str | None,
    *,
    source: str = "--access_policy",
    allowed_calling_aets: str | None = None,
    allowed_networks: str | None = None,
    disabled: Iterable[Service] = (),
) -> AccessPolicy:
    """The policy from the JSON file's text (None: no file) and the global flags.

    Args:
        text: the policy file's JSON, or None.
        source: where it came from, for error messages.
        allowed_calling_aets: comma-separated AE titles allowed to use every service the file
            does not name.
        allowed_networks: comma-separated CIDRs, likewise.
        disabled: services switched off by flags (whatever the file says).

    Raises:
        ConfigError: malformed JSON, an unknown service or key, a bad AE title or network.
    """
    aets = _csv(allowed_calling_aets)
    nets = _csv(allowed_networks)
    default = ServiceRule(
        calling_aets=None if aets is None else parse_calling_aets(aets, "--allowed_calling_aets"),
        networks=None if nets is None else parse_networks(nets, "--allowed_networks"),
    )
    rules = dict.fromkeys(Service, default)
    if text is not None:
        data = parse_json(text, source)
        if not isinstance(data, dict):
            raise ConfigError(f'{source} must be a JSON object like {{"store": {{...}}}}')
        names = {s.value: s for s in Service}
        for key, value in data.items():
            if key not in names:
                raise ConfigError(
                    f"{source}: unknown service {key!r} (expected {', '.join(sorted(names))})"
                )
            rules[names[key]] = _rule_from_json(value, f"{source}: {key}", default)
    for service in disabled:
        rule = rules[service]
        rules[service] = ServiceRule(False, rule.calling_aets, rule.networks)
    return AccessPolicy(rules)


def load_access_policy(
    path: Path | None,
    *,
    allowed_calling_aets: str | None = None,
    allowed_networks: str | None = None,
    disabled: Iterable[Service] = (),
) -> AccessPolicy:
    """:func:`parse_access_policy` with the text read from ``path``.

    Raises:
        ConfigError: the file cannot be read, or its content is invalid.
    """
    text = None
    if path is not None:
        try:
            text = path.read_text(encoding="utf-8")
        except OSError as exc:
            raise ConfigError(f"cannot read access policy {path}: {exc.strerror or exc}") from exc
    return parse_access_policy(
        text,
        source=str(path) if path else "--access_policy",
        allowed_calling_aets=allowed_calling_aets,
        allowed_networks=allowed_networks,
        disabled=disabled,
    )
