"""Access control: who may watch what, where and when.

- client_ip.py  the client address (X-Forwarded-For only behind trusted proxies)
- geoip.py      country of an address (MaxMind database)
- tokens.py     hashed-URL tokens: native vodgate and Akamai EdgeAuth; sign, verify, redact
- rules.py      profiles of rules; decide(profile, facts, now, entry_window) -> Decision (pure)
- access.py     AccessControl: one check() per request for the edge; admin profile swaps
- bench.py      decide() + verify() cost per request (docs/PERFORMANCE.md)

Configuration is parsed in config/partners.py; docs/ACCESS_CONTROL.md is the reference. This
package imports nothing from edge/ or packager/ and reads no clock: `now` is always passed in.
"""
