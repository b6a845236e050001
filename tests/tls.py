"""Test certificates: private CAs, server certificates for an IP or a name, client certificates.

Everything is generated per test (EC P-256, SHA-256). Faults for the TLS tests: a certificate
from an unrelated CA, an expired certificate (``expired=True``: valid until an hour ago), a
server certificate whose SAN names another host.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

CaKey = ec.EllipticCurvePrivateKey


def _name(cn: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])


def _write_key(key: ec.EllipticCurvePrivateKey, path: Path) -> None:
    path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    path.chmod(0o600)


def _validity(expired: bool) -> tuple[dt.datetime, dt.datetime]:
    now = dt.datetime.now(dt.UTC)
    if expired:
        return now - dt.timedelta(days=30), now - dt.timedelta(hours=1)
    return now - dt.timedelta(minutes=5), now + dt.timedelta(days=2)


def make_ca(directory: Path, cn: str) -> tuple[Path, CaKey, x509.Certificate]:
    """A self-signed CA; returns (cert path, key, cert)."""
    key = ec.generate_private_key(ec.SECP256R1())
    start, end = _validity(expired=False)
    cert = (
        x509.CertificateBuilder()
        .subject_name(_name(cn))
        .issuer_name(_name(cn))
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(start)
        .not_valid_after(end)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    path = directory / f"{cn}.pem"
    path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    return path, key, cert


def make_cert(
    directory: Path,
    stem: str,
    ca_key: CaKey,
    ca: x509.Certificate,
    *,
    cn: str,
    san: x509.GeneralName | None = None,
    client: bool = False,
    expired: bool = False,
) -> tuple[Path, Path]:
    """A leaf certificate signed by the CA; returns (``<stem>.pem``, ``<stem>.key``).

    Args:
        cn: the subject common name (a client's identity).
        san: the subjectAltName (a server's host: ``x509.IPAddress`` or ``x509.DNSName``).
        client: extended key usage clientAuth (else serverAuth).
        expired: valid until an hour ago.
    """
    key = ec.generate_private_key(ec.SECP256R1())
    start, end = _validity(expired)
    usage = ExtendedKeyUsageOID.CLIENT_AUTH if client else ExtendedKeyUsageOID.SERVER_AUTH
    builder = (
        x509.CertificateBuilder()
        .subject_name(_name(cn))
        .issuer_name(ca.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(start)
        .not_valid_after(end)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.ExtendedKeyUsage([usage]), critical=False)
    )
    if san is not None:
        builder = builder.add_extension(x509.SubjectAlternativeName([san]), critical=False)
    cert = builder.sign(ca_key, hashes.SHA256())
    cert_path, key_path = directory / f"{stem}.pem", directory / f"{stem}.key"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    _write_key(key, key_path)
    return cert_path, key_path


def make_server_cert(
    directory: Path,
    ca_key: CaKey,
    ca: x509.Certificate,
    ip: str,
    *,
    stem: str = "server",
    hostname: str | None = None,
    expired: bool = False,
) -> tuple[Path, Path]:
    """A server certificate for ``ip`` (or for DNS ``hostname`` when given) signed by the CA."""
    san = x509.DNSName(hostname) if hostname else x509.IPAddress(ipaddress.ip_address(ip))
    return make_cert(directory, stem, ca_key, ca, cn="broker", san=san, expired=expired)


def make_client_cert(
    directory: Path,
    ca_key: CaKey,
    ca: x509.Certificate,
    cn: str,
    *,
    stem: str | None = None,
    expired: bool = False,
) -> tuple[Path, Path]:
    """A client certificate with common name ``cn`` (the broker's identity for it)."""
    return make_cert(directory, stem or cn, ca_key, ca, cn=cn, client=True, expired=expired)
