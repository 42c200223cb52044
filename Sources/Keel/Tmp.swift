import KeelCore
