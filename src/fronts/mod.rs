//! The fronts: the chat APIs as served to clients. What each API is lives in [`crate::apis`]
//! (re-exported here for the code that names `crate::fronts`); this module adds CORS.

pub mod cors;

pub use crate::apis::{
    match_chat, match_route, parse_chat, Api, ApiError, ChatRequest, ChatRoute, Conversation,
    Route, MAX_CONVERSATION_KEY_LEN, MAX_MESSAGE_CHARS, MAX_USER_ID_CHARS,
};
