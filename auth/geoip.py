"""Country of an IP address from a MaxMind database (GeoIP2 / GeoLite2 Country or City).

Opened once at start (``server.geoip_database``); lookups are in-memory (mmap) and take a few
microseconds. The answer is the ISO 3166-1 alpha-2 code of the ``country`` record (where the address
is, not ``registered_country``, where its block is registered), or None when the database does not
know the address: private, loopback and link-local addresses never reach the database. Rules see
None as the explicit value ``"unknown"``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Callable, Protocol

import geoip2.database
import geoip2.errors
import maxminddb

from .client_ip import IPAddress, normalize_ip


class GeoIpError(Exception):
    """The configured GeoIP database cannot be used (missing, not a MaxMind DB, no country data)."""


class CountrySource(Protocol):
    def country(self, ip: IPAddress) -> str | None: ...


class CountryLookup:
    """``CountryLookup(path).country(ip) -> "FR" | None``."""

    def __init__(self, path: Path | str) -> None:
        self.path = Path(path)
        if not self.path.is_file():
            raise GeoIpError(
                f"GeoIP database {self.path} does not exist; set server.geoip_database to a MaxMind "
                "GeoIP2/GeoLite2 Country or City .mmdb file, or remove it and the country conditions"
            )
        try:
            self._reader = geoip2.database.Reader(str(self.path))
        except (maxminddb.InvalidDatabaseError, ValueError, OSError) as exc:
            raise GeoIpError(
                f"GeoIP database {self.path} is not a MaxMind DB file ({exc}); expected a GeoIP2/GeoLite2 "
                "Country or City .mmdb (the binary download, not the CSV)"
            ) from None
        self.database_type = self._reader.metadata().database_type
        self._lookup: Callable[[str], object]
        if "Country" in self.database_type:
            self._lookup = self._reader.country
        elif "City" in self.database_type or "Enterprise" in self.database_type:
            self._lookup = self._reader.city
        else:
            self._reader.close()
            raise GeoIpError(
                f"GeoIP database {self.path} is a {self.database_type!r} database, which has no country "
                "data; use a GeoIP2/GeoLite2 Country or City database"
            )

    def country(self, ip: IPAddress) -> str | None:
        ip = normalize_ip(ip)
        if not ip.is_global:
            return None
        try:
            record = self._lookup(str(ip))
        except geoip2.errors.AddressNotFoundError:
            return None
        except ValueError:  # an IPv6 address in an IPv4-only database
            return None
        code = record.country.iso_code  # type: ignore[attr-defined]
        return code.upper() if code else None

    def close(self) -> None:
        self._reader.close()

    def __enter__(self) -> "CountryLookup":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
