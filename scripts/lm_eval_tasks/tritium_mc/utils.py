import os


def data_file():
    return os.path.join(os.path.dirname(os.path.abspath(__file__)), "questions.jsonl")
