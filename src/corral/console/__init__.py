"""The web console's sign-in: a local password and TOTP, or an OIDC provider's login."""
