"""`python -m utils.data.squad_features`, the documented command; the feature builder is utils/squad/features.py."""
from utils.squad.features import main

if __name__ == "__main__":
    main()
