"""The month's spend ledger (§13): small spends recorded, and refused once the month would pass its ceiling.

`state/.mako/spend.jsonl` is append-only and in time order, so the month's total is read from its end back
to the first entry of an earlier month. Appends are serialised by a lock, so two spends at once cannot both
fit under a ceiling only one of them fits.
"""

import json
from datetime import datetime, timezone

from .approvals import append_record, cut, jsonl_line, valid_pence, waiting_lock
from .fileio import lines_from_end
from .logs import iso

LEDGER_FILE = "spend.jsonl"


class SpendLedger:
    """The month's spends against `tick.budget_ceiling_pence_month`."""

    def __init__(self, cfg, redactor):
        self.cfg = cfg
        self.redactor = redactor
        self.ledger_path = cfg.paths.private / LEDGER_FILE
        self.ledger_lock_path = cfg.paths.private / "spend.lock"

    def month_total(self, month):
        """Pence recorded for `month`. The ledger is appended in time order, so it is read from its end
        back to the first entry of an earlier month: the cost is this month's entries, not the history."""
        spent = 0
        for line in lines_from_end(self.ledger_path):
            try:
                entry = json.loads(line)
            except ValueError:
                continue
            if not isinstance(entry, dict) or not isinstance(entry.get("month"), str):
                continue
            if entry["month"] < month:
                break
            if entry["month"] == month and valid_pence(entry.get("amount_pence")):
                spent += entry["amount_pence"]
        return spent

    def month_spend(self):
        """Pence recorded in the ledger for the current (UTC) month."""
        return self.month_total(datetime.now(timezone.utc).strftime("%Y-%m"))

    def _over_ceiling(self, amount_pence, month, spent):
        ceiling = self.cfg.tick.budget_ceiling_pence_month
        if spent + amount_pence > ceiling:
            return (f"refused: {amount_pence}p would take {month} to {spent + amount_pence}p, "
                    f"over the {ceiling}p monthly ceiling ({spent}p spent)")
        return None

    def check_spend(self, amount_pence):
        """Whether a spend would fit under this month's ceiling, without recording it: (fits?, message)."""
        if not valid_pence(amount_pence):
            return False, f"amount_pence must be a non-negative integer, got {cut(amount_pence, 40)}"
        month = datetime.now(timezone.utc).strftime("%Y-%m")
        refusal = self._over_ceiling(amount_pence, month, self.month_total(month))
        return refusal is None, refusal or "within the monthly ceiling"

    def record_spend(self, amount_pence, reason, tick_n, over_budget=False):
        """Add a spend to the ledger unless it takes the month over the ceiling: (recorded?, message).

        `over_budget`: the operator approved this spend knowing it passes the ceiling (`--over-budget`).
        """
        if not valid_pence(amount_pence):
            return False, f"amount_pence must be a non-negative integer, got {cut(amount_pence, 40)}"
        now = datetime.now(timezone.utc)
        month = now.strftime("%Y-%m")
        with waiting_lock(self.ledger_lock_path):
            spent = self.month_total(month)
            refusal = self._over_ceiling(amount_pence, month, spent)
            if refusal and not over_budget:
                return False, refusal
            entry = {"ts": iso(now), "month": month, "amount_pence": amount_pence,
                     "reason": self.redactor.text(reason), "tick": tick_n}
            append_record(self.ledger_path, jsonl_line(entry))
        ceiling = self.cfg.tick.budget_ceiling_pence_month
        return True, f"recorded {amount_pence}p ({month}: {spent + amount_pence}p of {ceiling}p)"
