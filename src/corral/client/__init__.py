"""The agent SDK: what an agent developer imports to talk to Corral.

`AgentCredential` reads the credential file `corral agent create` wrote; `TokenSource` trades
it for short-lived DPoP-bound access tokens; `DPoPAuth` signs every request of an httpx client
(or the MCP SDK's, through `mcp_http_client`) with a fresh proof. The proof key never leaves
memory. See the README's agent-side quick start.
"""

from corral.client.http import AgentCredential, DPoPAuth, TokenSource, mcp_http_client
from corral.identity.client import DPoPKey, client_assertion

__all__ = [
    "AgentCredential",
    "DPoPAuth",
    "DPoPKey",
    "TokenSource",
    "client_assertion",
    "mcp_http_client",
]
