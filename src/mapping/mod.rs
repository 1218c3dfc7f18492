//! Body parsing, selectors and presets: raw IPN → candidate events. Pure.
