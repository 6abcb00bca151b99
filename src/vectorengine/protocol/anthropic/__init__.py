"""Anthropic Messages wire format: pure translators to and from the hub (OpenAI chat) format."""

from vectorengine.protocol.anthropic.inbound import messages_to_chat
from vectorengine.protocol.anthropic.outbound import ChatToMessagesStream, chat_to_message, message_id
from vectorengine.protocol.anthropic.request import TranslationError, chat_to_messages, tool_id
from vectorengine.protocol.anthropic.response import (
    FINISH_REASONS,
    leading_error,
    message_to_chat,
    openai_error_from_anthropic,
    usage_from_anthropic,
)
from vectorengine.protocol.anthropic.stream import MessagesToChatStream

__all__ = [
    "FINISH_REASONS",
    "ChatToMessagesStream",
    "MessagesToChatStream",
    "TranslationError",
    "chat_to_message",
    "chat_to_messages",
    "leading_error",
    "message_id",
    "message_to_chat",
    "messages_to_chat",
    "openai_error_from_anthropic",
    "tool_id",
    "usage_from_anthropic",
]
