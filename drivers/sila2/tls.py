"""SiLA 2 certificates (Part B): TLS always, the server's UUID in its certificate, no silent trust.

A server's certificate carries its SiLA server UUID in the extension 1.3.6.1.4.1.58583; a client
that trusts the certificate checks that the server it reached reports that UUID. A client never
accepts an untrusted certificate implicitly: it trusts a CA file it is given, the system's trust
store, or — only when told to — the CA a server advertises in its discovery record.
"""

from __future__ import annotations

import os
import uuid
from pathlib import Path

#: The certificate extension holding the SiLA server UUID (SiLA 2 Part B).
UUID_EXTENSION = "1.3.6.1.4.1.58583"


def server_credentials(
    directory: Path, name: str, server_uuid: uuid.UUID, host: str
) -> tuple[bytes, bytes, Path]:
    """``(private key, certificate, certificate path)`` for server ``name``: read from ``directory``
    (``NAME.key``, ``NAME.pem``) or, the first time, made there (self-signed, with the UUID). A kept
    certificate for another UUID is made anew, since clients check the UUID against it."""
    from sila2.server.encryption import generate_self_signed_certificate

    directory.mkdir(parents=True, exist_ok=True)
    key_file, cert_file = directory / f"{name}.key", directory / f"{name}.pem"
    if key_file.is_file() and cert_file.is_file():
        key, cert = key_file.read_bytes(), cert_file.read_bytes()
        if certificate_uuid(cert) == server_uuid:
            return key, cert, cert_file
    key, cert = generate_self_signed_certificate(server_uuid, host)
    descriptor = os.open(key_file, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(descriptor, "wb") as out:
        out.write(key)
    cert_file.write_bytes(cert)
    return key, cert, cert_file


def certificate_uuid(pem: bytes) -> uuid.UUID | None:
    """The SiLA server UUID a PEM certificate carries, or None."""
    from cryptography import x509

    certificate = x509.load_pem_x509_certificate(pem)
    try:
        extension = certificate.extensions.get_extension_for_oid(x509.ObjectIdentifier(UUID_EXTENSION))
    except x509.ExtensionNotFound:
        return None
    value = extension.value
    raw = value.value if isinstance(value, x509.UnrecognizedExtension) else b""
    try:
        return uuid.UUID(raw.decode("ascii"))
    except (UnicodeDecodeError, ValueError):
        return None
