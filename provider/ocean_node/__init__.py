"""ocean-node's compute protocol (what ocean.js 8.x and ocean-cli speak), served next to Provider v2.1.

The routes in :mod:`provider.routers` tell the two apart by the request (docs/provider.md lists which surface
each endpoint serves) and hand ocean-node's requests to these modules: environments with resources, prices
and a free tier; initializeCompute with the escrow payment; paid (escrow) and free job starts.
"""
