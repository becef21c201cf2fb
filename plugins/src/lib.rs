//! Adiuva's batch agents (email scanner, folder watcher, calendar sync, browser history), each
//! running against the engine's plugin API with only the capabilities the person granted.
//!
//! Nothing is built here yet: plugins come after the log, sync and the permission events.
