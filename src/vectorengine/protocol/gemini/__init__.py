"""Gemini API wire format (v1beta generateContent): pure translators to and from the hub format."""

from vectorengine.protocol.gemini.inbound import generate_to_chat
from vectorengine.protocol.gemini.outbound import ChatToGenerateStream, chat_to_generate_response
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
    "ChatToGenerateStream",
    "GenerateToChatStream",
    "TranslationError",
    "chat_to_generate",
    "chat_to_generate_response",
    "clean_schema",
    "generate_response_to_chat",
    "generate_to_chat",
    "leading_error",
    "openai_error_from_gemini",
    "usage_from_gemini",
]
