"""The suppression list: address hashes no mail goes to, whoever asks (a hard bounce, a
complaint, an erasure, the staff). Bounces and the sending side depend on it; it depends on
the subscribers, whose consent events record each change."""
