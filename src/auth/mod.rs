//! Provider authentication schemes (SPEC §4). Pure: time is passed in.
