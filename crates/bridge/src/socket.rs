//! What every WebSocket of the bridge shares, whoever opens it (the Media Stream, the
//! recogniser's socket, the stand-ins and the load generator).

/// Bytes a WebSocket reads at once. tungstenite's default (128 KiB, zero-filled before each
/// read) made every call hold 128 KiB per socket; a Twilio message is under 1 KiB, and a larger
/// one still grows the buffer as needed.
pub const SOCKET_READ_BUFFER: usize = 4096;
