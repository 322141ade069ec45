"""Deterministic, lazily computed audit records for the emulator.

Nothing is stored per record: record ``i`` is a pure function of ``(seed, records, data_start,
data_end, i)``, computed from one 64-bit integer hash. This keeps a million-record data set free
to create and lets two emulators with the same seed serve byte-identical pages.
"""

from __future__ import annotations

import bisect
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from functools import lru_cache

# `productTypes` filter value -> the label that appears in a record's `product` field (audit.md §1).
PRODUCT_TYPES: dict[str, str] = {
    "Office365Management": "Cloud Management",
    "Office365Backup": "Cloud Backup for Microsoft 365",
    "GovernanceAutomation": "Cloud Governance",
    "Portal": "AvePoint Online Services",
    "PolicyEnforcer": "Policies for Microsoft 365",
    "CPManagement": "Insights",
    "SMP": "EnPower",
    "VDR": "Confide",
    "AvePointRecords": "Opus",
    "GsuiteBackup": "Cloud Backup for Google Workspace",
    "CRMBackup": "Cloud Backup for Dynamics 365",
}

# Every `geoLocations` value the real service accepts (audit.md §1).
GEO_LOCATIONS: tuple[str, ...] = (
    "PrimaryGeoLocation", "NAM", "EUR", "GBR", "JPN", "APC", "AUS", "CAN", "IND", "FRA", "ARE",
    "ZAF", "CHE", "KOR", "DEU", "BRA", "NOR", "SWE", "QAT", "POL", "ITA", "ISR", "MEX", "NZL",
    "ESP", "TWN",
)  # fmt: skip

# The seeded tenant is Multi-Geo with only these locations, so filters on the other valid
# codes are accepted but match nothing -- like a real tenant without that geo.
DATA_GEO_LOCATIONS: tuple[str, ...] = ("PrimaryGeoLocation", "NAM", "EUR", "JPN")

# (actionName, controllerName, module, functionality, objectType, operationType, action)
_Template = tuple[str, str, str, str, str, str, str | None]

# Activity templates per product, in PRODUCT_TYPES order. `action` is set for Cloud Governance
# only, as documented.
_TEMPLATES: tuple[tuple[_Template, ...], ...] = (
    (
        ("Create Policy", "PolicyController", "Policy", "Management Policy", "Policy", "Create",
         None),
        ("Update Site Settings", "SiteController", "Site", "Site Settings", "Site", "Update", None),
    ),
    (
        ("Run Backup Job", "BackupJobController", "Backup", "Backup Job", "Job", "Run", None),
        ("Restore Items", "RestoreController", "Restore", "Restore Job", "Job", "Restore", None),
    ),
    (
        ("Submit Request", "RequestController", "Request", "Service Request", "Request", "Create",
         "Create Site"),
        ("Approve Task", "TaskController", "Task", "Approval", "Task", "Update", "Approve"),
    ),
    (
        ("Sign In", "AccountController", "Account", "Authentication", "User", "Login", None),
        ("Session Timeout", "AccountController", "Account", "Authentication", "User", "Logout",
         None),
        ("Update App Registration", "AppRegistrationController", "Administration",
         "App Registrations", "Application", "Update", None),
    ),
    (("Apply Rule", "RuleController", "Rule", "Policy Rule", "Rule", "Update", None),),
    (("Export Report", "ReportController", "Report", "Permission Report", "Report", "Export",
      None),),
    (("Update Customer", "CustomerController", "Customer", "Tenant Management", "Customer",
      "Update", None),),
    (("Update Share Setting", "ShareSettingController", "Share Setting", "External Sharing",
      "Workspace", "Update", None),),
    (("Apply Retention", "RecordController", "Records", "Retention", "Record", "Update", None),),
    (("Run Backup Job", "GoogleBackupController", "Backup", "Backup Job", "Job", "Run", None),),
    (("Run Backup Job", "DynamicsBackupController", "Backup", "Backup Job", "Job", "Run", None),),
)  # fmt: skip

_PRODUCT_LABELS: tuple[str, ...] = tuple(PRODUCT_TYPES.values())
_N_PRODUCTS = len(_PRODUCT_LABELS)
_N_GEOS = len(DATA_GEO_LOCATIONS)
_CONFIDE = _PRODUCT_LABELS.index("Confide")

_MASK64 = (1 << 64) - 1
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_EPOCH_DATE = date(1970, 1, 1)
_MS_PER_DAY = 86_400_000


def _mix64(x: int) -> int:
    """splitmix64 finalizer: a few integer ops per record, far cheaper than a seeded RNG object."""
    x &= _MASK64
    x = ((x ^ (x >> 30)) * 0xBF58476D1CE4E5B9) & _MASK64
    x = ((x ^ (x >> 27)) * 0x94D049BB133111EB) & _MASK64
    return x ^ (x >> 31)


def to_utc(value: datetime) -> datetime:
    """A naive datetime is taken as UTC (the emulator's rule for zone-less ISO strings)."""
    if value.tzinfo is None:
        return value.replace(tzinfo=UTC)
    return value.astimezone(UTC)


def to_epoch_us(value: datetime) -> int:
    """Exact integer microseconds since the epoch, so window bounds never suffer float rounding."""
    return (to_utc(value) - _EPOCH) // timedelta(microseconds=1)


@lru_cache(maxsize=4096)
def _day_prefix(day: int) -> str:
    # Records cluster on a few dozen days; caching the date part makes formatting cheap.
    return (_EPOCH_DATE + timedelta(days=day)).isoformat() + "T"


def format_ms(ms: int) -> str:
    """Epoch milliseconds -> ``YYYY-MM-DDTHH:MM:SS.fffZ`` without building a datetime."""
    day, rem = divmod(ms, _MS_PER_DAY)
    sec, milli = divmod(rem, 1000)
    hours, sec = divmod(sec, 3600)
    minutes, sec = divmod(sec, 60)
    return f"{_day_prefix(day)}{hours:02d}:{minutes:02d}:{sec:02d}.{milli:03d}Z"


@dataclass(frozen=True)
class AuditFilter:
    """Resolved `productTypes` / `geoLocations` filters as table indexes; None = no filter."""

    products: frozenset[int] | None = None
    geos: frozenset[int] | None = None

    @classmethod
    def build(
        cls, product_types: Iterable[str] | None, geo_locations: Iterable[str] | None
    ) -> AuditFilter | None:
        """Canonical (already validated) filter values -> index sets; None when nothing filters."""
        products = None
        if product_types is not None:
            labels = {PRODUCT_TYPES[p] for p in product_types}
            products = frozenset(_PRODUCT_LABELS.index(label) for label in labels)
        geos = None
        if geo_locations is not None:
            wanted = set(geo_locations)
            geos = frozenset(k for k, g in enumerate(DATA_GEO_LOCATIONS) if g in wanted)
        if products is None and geos is None:
            return None
        return cls(products, geos)

    def matches(self, h: int) -> bool:
        if self.products is not None and _product_index(h) not in self.products:
            return False
        return self.geos is None or _geo_index(h) in self.geos


# Bit layout of the per-record hash h: bits 0-31 time jitter, 32-39 product, 40-43 template,
# 44-47 geo, 48-55 user, 56-59 status, 60-63 partner. Filters and records must agree on it.
def _product_index(h: int) -> int:
    return ((h >> 32) & 0xFF) % _N_PRODUCTS


def _geo_index(h: int) -> int:
    return ((h >> 44) & 0xF) % _N_GEOS


class _TimeIndex:
    """Lazy sorted sequence of record times (epoch ms) so `bisect` can find window bounds."""

    def __init__(self, data: AuditData) -> None:
        self._data = data

    def __len__(self) -> int:
        return self._data.records

    def __getitem__(self, i: int) -> int:
        return self._data.time_ms(i)


class AuditData:
    """The seeded audit log: `records` records over [data_start, data_end), in time order."""

    def __init__(self, seed: int, records: int, data_start: datetime, data_end: datetime) -> None:
        if records < 0:
            raise ValueError("records must be >= 0")
        self.seed = seed
        self.records = records
        self.start_ms = to_epoch_us(data_start) // 1000
        self.span_ms = to_epoch_us(data_end) // 1000 - self.start_ms
        if self.span_ms <= 0:
            raise ValueError("data_end must be after data_start")
        self._seed_mix = _mix64(seed * 0x9E3779B97F4A7C15 + 0x632BE59BD9B4E019)
        self._times = _TimeIndex(self)

    def __len__(self) -> int:
        return self.records

    def _hash(self, i: int) -> int:
        return _mix64(self._seed_mix ^ i)

    def _time_from_hash(self, i: int, h: int) -> int:
        # t_i = start + floor((i + j_i) * span / records) with j_i = (h mod 2^32) / 2^32 in [0, 1).
        # Slot i never overlaps slot i+1, so times are non-decreasing in i (bisect relies on it).
        return self.start_ms + (((i << 32) | (h & 0xFFFFFFFF)) * self.span_ms) // (self.records << 32)

    def time_ms(self, i: int) -> int:
        return self._time_from_hash(i, self._hash(i))

    def index_range(self, start_us: int, end_us: int, *, end_inclusive: bool) -> tuple[int, int]:
        """Record indexes [lo, hi) whose time lies in [start, end) or [start, end]."""
        # Records have millisecond times; a bound with microseconds rounds inward exactly.
        lo = bisect.bisect_left(self._times, -(-start_us // 1000))
        if end_inclusive:
            hi = bisect.bisect_right(self._times, end_us // 1000)
        else:
            hi = bisect.bisect_left(self._times, -(-end_us // 1000))
        return lo, max(lo, hi)

    def matches(self, i: int, flt: AuditFilter | None) -> bool:
        return flt is None or flt.matches(self._hash(i))

    def count(self, lo: int, hi: int, flt: AuditFilter | None) -> int:
        if flt is None:
            return hi - lo
        return sum(1 for i in range(lo, hi) if flt.matches(self._hash(i)))

    def iter_records(self, lo: int, hi: int, flt: AuditFilter | None) -> Iterator[dict[str, object]]:
        for i in range(lo, hi):
            if flt is None or flt.matches(self._hash(i)):
                yield self.record(i)

    def page(
        self, lo: int, hi: int, size: int, flt: AuditFilter | None
    ) -> tuple[list[dict[str, object]], int | None]:
        """Up to `size` matching records from index `lo`, plus the index of the next match.

        The next index is None when nothing matching follows, so an exactly full last page still
        ends the listing instead of forcing the client to fetch an empty trailing page.
        """
        if flt is None:
            stop = min(lo + size, hi)
            return [self.record(i) for i in range(lo, stop)], (stop if stop < hi else None)
        out: list[dict[str, object]] = []
        i = lo
        while i < hi and len(out) < size:
            if flt.matches(self._hash(i)):
                out.append(self.record(i))
            i += 1
        while i < hi and not flt.matches(self._hash(i)):
            i += 1
        return out, (i if i < hi else None)

    def record(self, i: int) -> dict[str, object]:
        """Record i with exactly the fields of UserActivityAuditLogItemModel (audit.md §1)."""
        h = self._hash(i)
        p = _product_index(h)
        templates = _TEMPLATES[p]
        action_name, controller, module, functionality, object_type, operation, action = templates[
            ((h >> 40) & 0xF) % len(templates)
        ]
        object_name = f"{object_type}-{i:07d}"  # the index makes every record unique
        updated = operation == "Update"
        ip = _mix64(h ^ 0xD1B54A32D192ED03)  # a second hash: the 64 bits of h are all used
        flip = ip >> 63
        return {
            "actionName": action_name,
            "actionUser": f"user{(h >> 48) & 0xFF}@contoso.onmicrosoft.com",
            # The real sample carries the *string* "null" here, not JSON null.
            "actionParameters": f'{{"name":"{object_name}"}}' if operation == "Create" else "null",
            "actionTime": format_ms(self._time_from_hash(i, h)),
            "controllerName": controller,
            "product": _PRODUCT_LABELS[p],
            "geoLocation": DATA_GEO_LOCATIONS[_geo_index(h)],
            "previousValue": ("Enabled" if flip else "Disabled") if updated else None,
            "currentValue": ("Disabled" if flip else "Enabled") if updated else None,
            "partnerTenantOwner": "admin@fabrikam-msp.onmicrosoft.com" if h >> 60 == 0 else None,
            "status": "Failed" if (h >> 56) & 0xF == 0 else "Success",
            "comment": None,
            "objectType": object_type,
            "operationType": operation,
            "module": module,
            "functionality": functionality,
            "objectName": object_name,
            "action": action,
            "clientIP": f"10.{(ip >> 16) & 0xFF}.{(ip >> 8) & 0xFF}.{ip & 0xFF}",
            # Documented as Confide-only; other products send an empty object, as in the sample.
            "additionalDetails": (
                {"shareSetting": "Anyone with the link", "workspace": object_name} if p == _CONFIDE else {}
            ),
        }
