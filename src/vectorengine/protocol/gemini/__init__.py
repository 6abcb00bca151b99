"""Gemini API wire format (v1beta generateContent): pure translators to and from the hub format."""

from vectorengine.protocol.gemini.request import (
    THOUGHT_MARK,
    TranslationError,
    chat_to_generate,
    clean_schema,
)
from vectorengine.protocol.gemini.response import (
    generate_response_to_chat,
    leading_error,
    openai_error_from_gemini,
    usage_from_gemini,
)
from vectorengine.protocol.gemini.stream import GenerateToChatStream

__all__ = [
    "THOUGHT_MARK",
    "GenerateToChatStream",
    "TranslationError",
    "chat_to_generate",
    "clean_schema",
    "generate_response_to_chat",
    "leading_error",
    "openai_error_from_gemini",
    "usage_from_gemini",
]
