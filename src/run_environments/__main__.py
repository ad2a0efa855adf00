from run_environments.cli import main

main()
