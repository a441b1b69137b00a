//! CoAP (RFC 7252, 7641, 7959): wire codec and a sans-IO endpoint engine.

pub mod engine;
pub mod msg;

pub use engine::{
    Config, Engine, EngineError, Event, IncomingId, RequestError, RequestId, Transmit,
};
pub use msg::{opt, BlockOpt, Code, DecodeError, Message, MsgType, Token};
