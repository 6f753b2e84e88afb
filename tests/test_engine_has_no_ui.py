import subprocess
import sys


def test_the_engine_never_imports_streamlit():
    code = (
        "import sys, refiner.workspace, refiner.jobs, refiner.viz, refiner.export, refiner.painting, "
        "refiner.results, refiner.cli; print('streamlit' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"
