from hv.cli import main

main()
