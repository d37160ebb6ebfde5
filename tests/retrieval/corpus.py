"""A small real corpus on disk (English + Chinese, several formats) and a counting embedder."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

from tests.fakes import HashEmbedder

DOCS: dict[str, str] = {
    "hr/leave.md": """# Leave policy

## Annual leave
Full-time employees receive 27 days of annual leave per year. Leave is booked in the staff portal
at least two weeks ahead.

## Sick leave
Report sickness to your manager before 10:00 on the first day. A doctor's note is needed after
seven calendar days of absence.
""",
    "safety/fire.md": """# Site safety

## Fire drills
Fire drills take place every quarter. When the alarm sounds, leave by the nearest exit and gather
at assembly point B in the north car park. Do not use the lifts.

## Laboratory gloves
Nitrile gloves are required when handling calibration solvents.
""",
    "products/tw40.txt": """Tidewell TW40 pump manual.

The TW40 peristaltic pump delivers up to 40 litres per hour. Replace the tubing cartridge every
500 operating hours. The status light blinks amber when the cartridge is due for replacement.
""",
    "it/vpn.html": """<html><body><h1>Remote access</h1><h2>VPN</h2>
<p>Connect to the corporate VPN with the Lumen Connect client. Multi-factor authentication codes
come from the authenticator app; SMS codes are not accepted.</p></body></html>""",
    "zh/handbook.md": """# 员工手册

## 年假
员工累计工作满一年的，每年享有带薪年假五天。年假须提前五个工作日在系统中申请。

## 报销
差旅费用须在出差结束后三十天内提交报销申请，并附上发票原件。
""",
    "zh/security.txt": """信息安全规定。

办公室无线网络分为员工网络和访客网络，访客网络的密码每月一日更换。离开座位时必须锁定电脑屏幕。
""",
}


def write_corpus(root: Path, docs: dict[str, str] | None = None) -> Path:
    """Write the corpus under root (GB18030 for one Chinese text file) and return root."""
    for rel, text in (docs or DOCS).items():
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        encoding = "gb18030" if rel == "zh/security.txt" else "utf-8"
        path.write_bytes(text.encode(encoding))
    return root


class CountingEmbedder(HashEmbedder):
    """The deterministic hash embedder, counting the texts it is asked to embed."""

    def __init__(self, dim: int = 64, salt: str = "") -> None:
        super().__init__(dim=dim, salt=salt)
        self.calls = 0
        self.texts: list[str] = []

    def embed(self, texts: Sequence[str]) -> np.ndarray:
        self.calls += 1
        self.texts.extend(texts)
        return super().embed(texts)

    def reset(self) -> None:
        self.calls, self.texts = 0, []
