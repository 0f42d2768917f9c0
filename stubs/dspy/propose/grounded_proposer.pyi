from typing import Any

class GroundedProposer:
    def propose_instruction_for_predictor(
        self,
        program: Any,
        predictor: Any,
        pred_i: int,
        demo_candidates: Any,
        demo_set_i: int,
        trial_logs: dict[str, Any],
        tip: str | None = None,
    ) -> str: ...
