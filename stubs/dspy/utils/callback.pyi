from typing import Any

class BaseCallback:
    def on_lm_start(self, call_id: str, instance: Any, inputs: dict[str, Any]) -> None: ...
