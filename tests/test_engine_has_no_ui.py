import subprocess
import sys


def test_the_engine_never_imports_streamlit():
    """Every module of the package imports without Streamlit: the UI lives in app.py, pages/ and webapp/."""
    code = (
        "import importlib, pkgutil, sys, refiner\n"
        "for m in pkgutil.walk_packages(refiner.__path__, 'refiner.'):\n"
        "    if m.name != 'refiner.__main__':\n"
        "        importlib.import_module(m.name)\n"
        "print('streamlit' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"
