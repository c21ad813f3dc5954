"""`SteerModel`: a loaded model and what steering needs to know about it (layer count, width,
the median per-token residual norm at every layer, a fingerprint of the weights)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # torch is imported where used: `steer validate` must start fast
    import torch


@dataclass
class SteerModel:
    """A loaded model (from `steer.load_model`): the TransformerLens bridge, its tokenizer, and
    the facts steering needs. `forward` runs a pass on which steering and capture hooks apply.

    Example:
        >>> import steer
        >>> m = steer.load_model("tiny-random")
        >>> m.describe()["n_layers"], m.resid_hook(2)
        (4, 'blocks.2.hook_resid_post')
    """

    bridge: object  # transformer_lens.model_bridge.TransformerBridge
    tokenizer: object
    name: str
    device: torch.device
    dtype: torch.dtype
    fingerprint: str
    _norms: torch.Tensor | None = field(default=None, repr=False)
    # The HF module tree over the bridge's weights, used for decoding (fastpath.py); None:
    # decode through the bridge.
    plain: object | None = field(default=None, repr=False)
    # How generation decodes on the plain tree: "dynamic" (a growing KV cache), "static" or
    # "compiled" (static_cache.py). From STEER_DECODE at load.
    decode: str = "dynamic"
    _static: dict = field(default_factory=dict, repr=False)  # decode mode -> StaticDecoder

    def static_decoder(self):
        """The StaticDecoder for `decode` "static"/"compiled", built on first use; None when
        generation uses the growing cache."""
        if self.decode not in ("static", "compiled") or self.plain is None:
            return None
        if self.decode not in self._static:
            from steer.lm.static_cache import StaticDecoder

            self._static[self.decode] = StaticDecoder(self, compiled=self.decode == "compiled")
        return self._static[self.decode]

    @property
    def n_layers(self) -> int:
        return int(self.bridge.cfg.n_layers)

    @property
    def d_model(self) -> int:
        return int(self.bridge.cfg.d_model)

    @property
    def has_chat_template(self) -> bool:
        return bool(getattr(self.tokenizer, "chat_template", None))

    @property
    def default_readout_layer(self) -> int:
        """A little past half depth, where read-outs of real text were best on SmolLM2."""
        return round(0.55 * self.n_layers)

    @staticmethod
    def resid_hook(layer: int) -> str:
        """The hook point steered and read at `layer`: the residual stream after block `layer`."""
        return f"blocks.{layer}.hook_resid_post"

    def format_prompt(self, user: str, system: str | None = None) -> str:
        """A prompt as the model expects it: its chat template where it has one."""
        return self.format_messages([{"role": "user", "content": user}], system)

    def format_messages(self, messages: list[dict], system: str | None = None) -> str:
        """A conversation (user/assistant turns, the last one the user's) formatted for the
        model, ending where the assistant's next reply begins."""
        if not self.has_chat_template:
            turns = [f"{m['role'].capitalize()}: {m['content']}" for m in messages]
            text = "\n\n".join(turns) if len(messages) > 1 else messages[0]["content"]
            return text if system is None else f"{system}\n\n{text}"
        msgs = ([{"role": "system", "content": system}] if system else []) + list(messages)
        return self.tokenizer.apply_chat_template(msgs, tokenize=False, add_generation_prompt=True)

    @property
    def default_system_prompt(self) -> str | None:
        """The system prompt the chat template adds when none is given (SmolLM2's names the
        model), or None when it adds none."""
        if not self.has_chat_template:
            return None
        marker, user = "\x1fSYSTEM\x1f", "\x1fUSER\x1f"
        plain = self.format_messages([{"role": "user", "content": user}])
        marked = self.format_messages([{"role": "user", "content": user}], marker)
        head, _, tail = marked.partition(marker)
        if not (plain.startswith(head) and tail and tail in plain[len(head):]):
            return None
        text = plain[len(head):plain.index(tail, len(head))]
        return text or None

    def user_offset(self, user: str, system: str | None = None) -> int:
        """Tokens before the user's message in the formatted prompt (system prompt, headers)."""
        full = self.format_prompt(user, system)
        head = full[:full.rfind(user)] if user in full else ""
        return len(self.tokenizer(head, add_special_tokens=False).input_ids)

    def encode(self, texts: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
        """Left-padded token ids and attention mask. Chat-formatted texts carry their own BOS."""
        tok = self.tokenizer
        tok.padding_side = "left"
        add_special = not self.has_chat_template
        enc = tok(texts, return_tensors="pt", padding=True, add_special_tokens=add_special)
        return enc.input_ids.to(self.device), enc.attention_mask.to(self.device)

    def forward(self, ids, mask=None, cache=None, logits_to_keep: int = 0,
                use_cache: bool = False):
        """(logits, KV cache or None) of a forward pass over `ids` (mask: past + new tokens).
        Runs on the plain HF tree where there is one (hook points on the residual stream
        relayed, see fastpath.py), else through the bridge; hooks registered through
        `bridge.hooks(...)` on `hook_resid_post` apply either way."""
        import torch

        if mask is None:
            mask = torch.ones_like(ids)
        if self.plain is not None:
            from steer.lm.fastpath import forward

            return forward(self.plain, ids, mask, cache, logits_to_keep, use_cache)
        kw = {"logits_to_keep": logits_to_keep} if logits_to_keep else {}
        if cache is not None or use_cache:
            kw.update({"past_key_values": cache} if cache is not None else {"use_cache": True})
            return self.bridge(ids, attention_mask=mask, return_type="logits_and_cache", **kw)
        return self.bridge(ids, attention_mask=mask, **kw), None

    def resid_norms(self) -> torch.Tensor:
        """Median per-token residual norm after every layer, on fixed neutral text (cached)."""
        if self._norms is None:
            from steer.lm.norms import median_resid_norms

            self._norms = median_resid_norms(self)
        return self._norms

    def describe(self) -> dict:
        """What the manifest records about the model."""
        return {"name": self.name, "fingerprint": self.fingerprint, "n_layers": self.n_layers,
                "d_model": self.d_model, "device": str(self.device),
                "dtype": str(self.dtype).replace("torch.", ""),
                "decode": "plain" if self.plain is not None else "bridge",
                "kv_cache": self.decode if self.plain is not None else "dynamic"}
