"""Certificates and keys for the local control plane, made with the openssl CLI.

ECDSA P-256 everywhere: fast to generate, and accepted by every component for serving, client
certificates and ServiceAccount token signing (ES256).
"""

from __future__ import annotations

import subprocess
from dataclasses import dataclass
from pathlib import Path

SERVICE_IP = "10.96.0.1"  # first address of --service-cluster-ip-range: the `kubernetes` Service
APISERVER_SANS = (
    "IP:127.0.0.1",
    f"IP:{SERVICE_IP}",
    "DNS:localhost",
    "DNS:kubernetes",
    "DNS:kubernetes.default",
    "DNS:kubernetes.default.svc",
    "DNS:kubernetes.default.svc.cluster.local",
)


@dataclass(frozen=True)
class CertPair:
    cert: Path
    key: Path


def _openssl(*args: str) -> None:
    result = subprocess.run(["openssl", *args], capture_output=True, text=True)
    if result.returncode != 0:
        raise RuntimeError(f"openssl {args[0]} failed ({result.returncode}): {result.stderr.strip()}")


def _new_key(path: Path, rsa_pkcs1: bool = False) -> None:
    if rsa_pkcs1:  # "BEGIN RSA PRIVATE KEY", for readers that only parse PKCS#1 (Kueue's cert-controller)
        _openssl("genrsa", "-traditional", "-out", str(path), "2048")
    else:
        _openssl("genpkey", "-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-256", "-out", str(path))
    path.chmod(0o600)


class PKI:
    """A CA in `directory` and the certificates it signs."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.ca = CertPair(directory / "ca.crt", directory / "ca.key")

    def create_ca(self, days: int = 3650, sans: tuple[str, ...] = (), rsa_pkcs1: bool = False) -> None:
        """A self-signed CA; `sans` and `rsa_pkcs1` for Kueue's cert-controller, which checks the CA by
        name and parses its key as PKCS#1 RSA."""
        self.directory.mkdir(parents=True, exist_ok=True)
        _new_key(self.ca.key, rsa_pkcs1)
        extra = ["-addext", "subjectAltName=" + ",".join(sans)] if sans else []
        _openssl(
            "req", "-x509", "-new", "-key", str(self.ca.key), "-out", str(self.ca.cert),
            "-days", str(days), "-subj", "/CN=recon-local-ca",
            "-addext", "basicConstraints=critical,CA:TRUE",
            "-addext", "keyUsage=critical,keyCertSign,cRLSign,digitalSignature",
            *extra,
        )  # fmt: skip

    def issue(
        self,
        name: str,
        common_name: str,
        organizations: tuple[str, ...] = (),
        sans: tuple[str, ...] = (),
        server: bool = False,
        days: int = 365,
    ) -> CertPair:
        """Sign a client (or, with server=True, serving) certificate; CN/O are the RBAC user/groups."""
        pair = CertPair(self.directory / f"{name}.crt", self.directory / f"{name}.key")
        csr = self.directory / f"{name}.csr"
        ext = self.directory / f"{name}.ext"
        _new_key(pair.key)
        subject = "".join(f"/O={org}" for org in organizations) + f"/CN={common_name}"
        _openssl("req", "-new", "-key", str(pair.key), "-out", str(csr), "-subj", subject)
        usage = "serverAuth,clientAuth" if server else "clientAuth"
        lines = [
            "basicConstraints=critical,CA:FALSE",
            "keyUsage=critical,digitalSignature,keyEncipherment",
            f"extendedKeyUsage={usage}",
        ]
        if sans:
            lines.append("subjectAltName=" + ",".join(sans))
        ext.write_text("\n".join(lines) + "\n")
        _openssl(
            "x509", "-req", "-in", str(csr), "-CA", str(self.ca.cert), "-CAkey", str(self.ca.key),
            "-CAcreateserial", "-out", str(pair.cert), "-days", str(days), "-extfile", str(ext),
        )  # fmt: skip
        csr.unlink()
        ext.unlink()
        return pair

    def service_account_keys(self) -> CertPair:
        """Key pair that signs ServiceAccount tokens (`cert` holds the public key)."""
        pair = CertPair(self.directory / "sa.pub", self.directory / "sa.key")
        _new_key(pair.key)
        _openssl("pkey", "-in", str(pair.key), "-pubout", "-out", str(pair.cert))
        return pair
