"""Country lookups against a small MaxMind database built here (mmdb-writer); nothing is downloaded."""

from ipaddress import ip_address

import pytest

mmdb_writer = pytest.importorskip("mmdb_writer")
from netaddr import IPSet  # noqa: E402  (installed with mmdb-writer)

from auth.geoip import CountryLookup, GeoIpError  # noqa: E402


def build(path, database_type="GeoLite2-Country", records=None):
    writer = mmdb_writer.MMDBWriter(ip_version=6, database_type=database_type, languages=["en"],
                                    description="vodgate test", ipv4_compatible=True)
    for networks, record in records or RECORDS:
        writer.insert_network(IPSet(networks), record)
    writer.to_db_file(str(path))
    return path


RECORDS = [
    (["81.2.69.0/24"], {"country": {"iso_code": "GB", "names": {"en": "United Kingdom"}}}),
    (["2a01:e00::/26"], {"country": {"iso_code": "FR"}}),
    (["89.160.20.0/24"], {"country": {"iso_code": "se"}}),
    # only where the block is registered: not a location, so "unknown"
    (["5.0.0.0/16"], {"registered_country": {"iso_code": "DE"}}),
]


@pytest.fixture(scope="module")
def lookup(tmp_path_factory):
    with CountryLookup(build(tmp_path_factory.mktemp("geo") / "country.mmdb")) as reader:
        yield reader


@pytest.mark.parametrize("address, country", [
    ("81.2.69.160", "GB"),
    ("2a01:e34:1234::1", "FR"),
    ("::ffff:81.2.69.1", "GB"),  # IPv4-mapped
    ("89.160.20.5", "SE"),  # upper-cased
    ("5.0.1.1", None),  # registered_country only
    ("8.8.8.8", None),  # not in the database
    ("10.1.2.3", None),  # private: never looked up
    ("127.0.0.1", None),
    ("::1", None),
    ("fe80::1", None),
])
def test_country(lookup, address, country):
    assert lookup.country(ip_address(address)) == country


def test_city_database_works_too(tmp_path):
    path = build(tmp_path / "city.mmdb", "GeoIP2-City", [(["81.2.69.0/24"], {"country": {"iso_code": "GB"}, "city": {"names": {"en": "London"}}})])
    with CountryLookup(path) as reader:
        assert reader.country(ip_address("81.2.69.1")) == "GB"


def test_missing_file_is_a_clear_error(tmp_path):
    with pytest.raises(GeoIpError, match=r"nope\.mmdb does not exist; set server.geoip_database"):
        CountryLookup(tmp_path / "nope.mmdb")


def test_not_a_maxmind_file(tmp_path):
    path = tmp_path / "countries.csv"
    path.write_text("network,geoname_id\n81.2.69.0/24,2635167\n")
    with pytest.raises(GeoIpError, match="is not a MaxMind DB file"):
        CountryLookup(path)


def test_database_without_countries(tmp_path):
    path = build(tmp_path / "asn.mmdb", "GeoLite2-ASN", [(["81.2.69.0/24"], {"autonomous_system_number": 20712})])
    with pytest.raises(GeoIpError, match="'GeoLite2-ASN' database, which has no country data"):
        CountryLookup(path)
