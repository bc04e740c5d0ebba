"""The MITRE ATT&CK techniques Palisade's detectors map to, embedded.

Only the techniques a detector actually reports are listed, with their ATT&CK v18.1 names and
tactics; a test checks each one against MITRE's own data (``shared/data/mitre``), so a renamed
or revoked technique shows up as a failing test, not as a wrong label in the console.
"""

from __future__ import annotations

from dataclasses import dataclass

ATTACK_VERSION = "18.1"


@dataclass(frozen=True)
class Technique:
    id: str
    name: str
    tactic_id: str
    tactic: str


TECHNIQUES: dict[str, Technique] = {
    t.id: t
    for t in (
        Technique("T1190", "Exploit Public-Facing Application", "TA0001", "Initial Access"),
        Technique("T1595.002", "Vulnerability Scanning", "TA0043", "Reconnaissance"),
        Technique("T1505.003", "Web Shell", "TA0003", "Persistence"),
        Technique("T1059", "Command and Scripting Interpreter", "TA0002", "Execution"),
        Technique("T1083", "File and Directory Discovery", "TA0007", "Discovery"),
        Technique("T1499", "Endpoint Denial of Service", "TA0040", "Impact"),
        Technique("T1498", "Network Denial of Service", "TA0040", "Impact"),
    )
}


def technique(technique_id: str) -> Technique:
    return TECHNIQUES[technique_id]
