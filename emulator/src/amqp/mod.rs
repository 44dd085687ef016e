//! (Placeholder until the `amqp` branch's AMQP server is merged: it owns this file.)

pub mod service;
