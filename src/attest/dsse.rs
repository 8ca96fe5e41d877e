//! DSSE envelopes: PAE, signing, verification.
