"""OpenAI Responses API wire format: pure translators to and from the hub format."""

from vectorengine.protocol.responses.inbound import responses_to_chat
from vectorengine.protocol.responses.observer import ResponsesObserver
from vectorengine.protocol.responses.outbound import (
    ChatToResponsesStream,
    chat_to_response,
    response_id,
    usage_to_responses,
)

__all__ = [
    "ChatToResponsesStream",
    "ResponsesObserver",
    "chat_to_response",
    "response_id",
    "responses_to_chat",
    "usage_to_responses",
]
