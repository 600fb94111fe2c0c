//! The provider APIs the proxy serves, and which provider kind serves each.

use crate::config::ProviderKind;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Endpoint {
    ChatCompletions,
    Responses,
    Embeddings,
    Messages,
    CountTokens,
}

impl Endpoint {
    pub const ALL: [Endpoint; 5] =
        [Endpoint::ChatCompletions, Endpoint::Responses, Endpoint::Embeddings, Endpoint::Messages, Endpoint::CountTokens];

    pub fn path(self) -> &'static str {
        match self {
            Endpoint::ChatCompletions => "/v1/chat/completions",
            Endpoint::Responses => "/v1/responses",
            Endpoint::Embeddings => "/v1/embeddings",
            Endpoint::Messages => "/v1/messages",
            Endpoint::CountTokens => "/v1/messages/count_tokens",
        }
    }

    pub fn kind(self) -> ProviderKind {
        match self {
            Endpoint::ChatCompletions | Endpoint::Responses | Endpoint::Embeddings => ProviderKind::Openai,
            Endpoint::Messages | Endpoint::CountTokens => ProviderKind::Anthropic,
        }
    }

    /// Whether the provider bills the call (count_tokens is free).
    pub fn billable(self) -> bool {
        self != Endpoint::CountTokens
    }

    /// Whether the reply has generated tokens worth reserving.
    pub fn generates(self) -> bool {
        matches!(self, Endpoint::ChatCompletions | Endpoint::Responses | Endpoint::Messages)
    }
}
