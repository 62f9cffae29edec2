"""The institution's domain: one small class per sub-domain around a shared :class:`.core.Core`
(database, keys, clock), after python-fido2's ``ctap2`` layout. See docs/institution.md,
"Layout"."""
