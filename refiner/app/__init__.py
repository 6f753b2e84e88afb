"""What only the web app needs: workspaces, sessions and access, uploads, background jobs, cached results, figures.

No Streamlit here either: pages in ``pages/`` and ``webapp/`` draw, these modules do the work.
"""
