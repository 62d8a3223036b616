"""The generic webhook adapter: signed JSON records POSTed in, signed JSON events POSTed out."""
