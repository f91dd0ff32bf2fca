from tests.second_worker.cli import main

main()
