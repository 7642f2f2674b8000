"""`python -m utils.squad_evaluate`, the documented command; the evaluator is utils/squad/evaluate.py."""
from utils.squad.evaluate import main

if __name__ == "__main__":
    main()
